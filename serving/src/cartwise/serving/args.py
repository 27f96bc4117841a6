"""The typed arguments of the Serve application (importable without Ray)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Measured on 2 cores (bench/api_load.py): one replica with room for every client in flight
# beats two replicas, which only add a process competing for the same cores. Serve's own
# default of 5 ongoing requests queues 20 concurrent clients at the proxy.
DEFAULT_MAX_ONGOING_REQUESTS = 64


def _settings_fields() -> frozenset[str]:
    from cartwise.platform.settings import Settings

    return frozenset(Settings.model_fields)


class AppArgs(BaseModel):
    """Typed arguments of the Serve application (``serve run``/config ``args``).

    Keys that name a ``cartwise`` setting (``database_url=...``) may be given flat; they are
    moved into ``settings``. Settings not overridden come from ``CARTWISE_*`` variables in the
    replica's environment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of cartwise Settings fields, e.g. {'database_url': ...}.",
    )
    num_replicas: int = Field(default=1, ge=1, le=64)
    max_ongoing_requests: int = Field(default=DEFAULT_MAX_ONGOING_REQUESTS, ge=1, le=10_000)
    max_queued_requests: int = Field(default=-1, ge=-1, description="-1: unbounded")
    num_cpus: float = Field(default=1.0, ge=0, le=256, description="CPUs reserved per replica")

    @model_validator(mode="before")
    @classmethod
    def _collect_flat_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _settings_fields()
        own = set(cls.model_fields)
        flat = {k: v for k, v in data.items() if k not in own and k in fields}
        if not flat:
            return data
        rest = {k: v for k, v in data.items() if k not in flat}
        rest["settings"] = {**flat, **dict(rest.get("settings") or {})}
        return rest

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - _settings_fields())
        if unknown:
            raise ValueError(f"unknown cartwise settings: {', '.join(unknown)}")
        return value
