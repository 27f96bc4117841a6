"""Combining concurrent calls into shared batches, without waiting for a batch to fill.

Some work costs mostly per call, not per item: a MiniLM forward pass, a database commit. When
request threads each need one item done, :class:`Combiner` lets whichever caller finds it idle
run every item pending at that moment (its own and the others') in one call, while the rest
wait for their results. A lone caller runs at once, so a quiet process pays no extra latency;
a busy one batches as deep as its concurrency ("flat combining").

    encode = Combiner(lambda texts: model.encode(texts))
    vectors = encode(["red chair"])          # from many threads at once

Items pending at the same time with the same key run once and share the result. A failed
batch raises its exception in every caller whose items it held; the next batch runs as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _identity(item: object) -> Hashable:
    return item  # type: ignore[return-value]


class Combiner(Generic[T, R]):
    """Runs ``run(items)`` (one result per item, in order) over the items of concurrent callers."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        key: Callable[[T], Hashable] = _identity,
        max_batch: int | None = None,
    ) -> None:
        self._run = run
        self._key = key
        self._max_batch = max_batch
        self._ready = threading.Condition()
        self._pending: dict[Hashable, T] = {}
        self._results: dict[Hashable, tuple[bool, object]] = {}
        self._waiting: dict[Hashable, int] = {}
        self._busy = False
        self.calls = 0  # batches run
        self.items = 0  # items run in them

    def __call__(self, items: Sequence[T]) -> list[R]:
        """The result of each item (in order); raises what the batch that held one raised."""
        keys = [self._key(item) for item in items]
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        with self._ready:
            for key, item in zip(keys, items, strict=True):
                # Nobody waits on it yet: pending for the next batch. Otherwise it is pending,
                # running or done for another caller already, and this one shares it.
                if key not in self._waiting:
                    self._pending[key] = item
                # Counted per occurrence, as _release uncounts it.
                self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            self._run_until_done(wanted)
            with self._ready:
                found = [self._results[key] for key in keys]
        finally:
            self._release(keys)
        out: list[R] = []
        for ok, value in found:
            if not ok:
                assert isinstance(value, BaseException)
                raise value
            out.append(value)  # type: ignore[arg-type]
        return out

    def _run_until_done(self, wanted: list[Hashable]) -> None:
        while True:
            with self._ready:
                while not all(key in self._results for key in wanted):
                    if not self._busy and self._pending:
                        break
                    self._ready.wait()
                else:
                    return
                batch = list(self._pending.items())[: self._max_batch]
                for key, _ in batch:
                    del self._pending[key]
                self._busy = True
            results: dict[Hashable, tuple[bool, object]]
            try:
                values = list(self._run([item for _, item in batch]))
                if len(values) != len(batch):
                    raise RuntimeError(f"{len(values)} results for {len(batch)} items")
                results = {key: (True, v) for (key, _), v in zip(batch, values, strict=True)}
            except BaseException as exc:  # handed to every caller of the batch
                results = {key: (False, exc) for key, _ in batch}
            with self._ready:
                self.calls += 1
                self.items += len(batch)
                self._results.update(results)
                self._busy = False
                self._ready.notify_all()

    def _release(self, keys: list[Hashable]) -> None:
        with self._ready:
            for key in keys:
                left = self._waiting[key] - 1
                if left:
                    self._waiting[key] = left
                else:
                    del self._waiting[key]
                    self._results.pop(key, None)


__all__ = ["Combiner"]
