"""Errors a model service or the ML client raises besides ``ValueError`` (bad input)."""

from __future__ import annotations


class ModelUnavailable(Exception):
    """No model can answer: not trained yet, failed to load, unreachable, or crashed."""

    def __init__(self, reason: str = "model unavailable") -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[ModelUnavailable], tuple[str]]:
        # Crosses Ray process boundaries; keep the reason when unpickled.
        return (type(self), (self.reason,))


class Deadline(Exception):
    """The model did not answer within the caller's deadline."""

    def __init__(self, reason: str = "deadline exceeded") -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[Deadline], tuple[str]]:
        return (type(self), (self.reason,))
