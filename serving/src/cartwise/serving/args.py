"""The typed arguments of the Serve application (importable without Ray)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Measured on 2 cores (bench/api_load.py): one replica with room for every client in flight
# beats two replicas, which only add a process competing for the same cores. Serve's own
# default of 5 ongoing requests queues 20 concurrent clients at the proxy.
DEFAULT_MAX_ONGOING_REQUESTS = 64

# The model deployments, by area (the ingress calls them by area, Serve shows the names).
MODEL_DEPLOYMENTS: dict[str, str] = {
    "recommend": "Recommender",
    "search": "Search",
    "fraud": "FraudScorer",
    "customers": "CustomerInsights",
    "demand": "DemandPlanner",
}
# The user_config every model service starts with; ``reconfigure`` applies a changed one live.
DEFAULT_USER_CONFIG: dict[str, Any] = {
    "alias": "champion",
    "reload_interval_s": 10.0,
    "cache_ttl_s": 60.0,
    # Load the model when a replica starts (before Serve routes to it), not on the first call.
    "warmup": True,
}
# Per-replica defaults of a model deployment on 2 cores (see cartwise.serving.deployments):
# - num_cpus is Ray's scheduling reservation, not a limit. The ingress reserves 1 CPU, so the
#   five model deployments share the other: 0.2 each. Their real load is small next to the
#   ingress's (a few ms of numpy per call, Feast/Redis reads in threads), and a whole CPU each
#   would need 6 CPUs just to start on a 2-core machine.
# - max_ongoing_requests 32: every service awaits its blocking parts in threads, so requests in
#   flight overlap their I/O, and nothing waits in the caller's router queue, whose back-off
#   collapses under load. Measured through the handle on 2 (busy) cores, Recommender without
#   the cache: 8 callers 177 rps / p99 77 ms with 32, against 121 rps / p99 114 ms with 4; at
#   32 callers 258 rps / p99 0.2 s with 32, against 17 rps / p99 3.9 s with 4. The deadline,
#   not a queue bound, protects the shopper.
# - one replica, autoscaling off: on 2 cores a second replica is a second process and model
#   copy competing for the same cores (set num_replicas or autoscaling_config per deployment
#   on a cluster).
DEFAULT_MODEL_NUM_CPUS = 0.2
DEFAULT_MODEL_MAX_ONGOING_REQUESTS = 32
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class DeploymentOptions(BaseModel):
    """Serve options of one model deployment; unset fields take the defaults above."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_replicas: int | None = Field(default=None, ge=1, le=64)
    max_ongoing_requests: int | None = Field(default=None, ge=1, le=10_000)
    max_queued_requests: int | None = Field(default=None, ge=-1, description="-1: unbounded")
    num_cpus: float | None = Field(default=None, ge=0, le=256)
    user_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged over DEFAULT_USER_CONFIG: alias, reload_interval_s, cache_ttl_s, ...",
    )
    autoscaling_config: dict[str, Any] | None = Field(
        default=None,
        description="Serve autoscaling (min_replicas, max_replicas, target_ongoing_requests...).",
    )
    service: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:Class' of the service (default: cartwise.serving.services.<area>).",
    )

    @field_validator("user_config")
    @classmethod
    def _check_user_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        alias = value.get("alias")
        if alias is not None and not (isinstance(alias, str) and _ALIAS.match(alias)):
            raise ValueError(f"user_config.alias must be an alias name, got {alias!r}")
        if not isinstance(value.get("warmup", True), bool):
            raise ValueError("user_config.warmup must be true or false")
        size = value.get("max_batch_size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"user_config.max_batch_size must be an integer >= 1, got {size!r}")
        for key in ("reload_interval_s", "cache_ttl_s", "batch_wait_timeout_s"):
            number = value.get(key)
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise ValueError(f"user_config.{key} must be a number >= 0, got {number!r}")
        return value

    @field_validator("autoscaling_config")
    @classmethod
    def _check_autoscaling(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        low, high = value.get("min_replicas", 1), value.get("max_replicas", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError("autoscaling min_replicas/max_replicas must be integers")
        if low < 0 or high < 1 or low > high:
            raise ValueError(f"autoscaling needs 0 <= min_replicas <= max_replicas, >= 1: {value}")
        return value

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options`` (defaults filled in)."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests or DEFAULT_MODEL_MAX_ONGOING_REQUESTS,
            "ray_actor_options": {
                "num_cpus": DEFAULT_MODEL_NUM_CPUS if self.num_cpus is None else self.num_cpus
            },
            "user_config": self.effective_user_config(),
        }
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            options["num_replicas"] = self.num_replicas or 1
        if self.max_queued_requests is not None:
            options["max_queued_requests"] = self.max_queued_requests
        return options

    def effective_user_config(self) -> dict[str, Any]:
        """DEFAULT_USER_CONFIG with this deployment's overrides."""
        return {**DEFAULT_USER_CONFIG, **self.user_config}


def _settings_fields() -> frozenset[str]:
    # The replicas build platform, feature (Feast) and model (MLflow) settings from the same
    # overrides; each ignores the others' fields.
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.settings import ModelSettings
    from cartwise.platform.settings import Settings

    return (
        frozenset(Settings.model_fields)
        | set(FeatureSettings.model_fields)
        | set(ModelSettings.model_fields)
    )


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
    ml: bool = Field(
        default=True,
        description="Deploy the five model deployments; False serves the commerce API alone "
        "(ML routes, if called, run the models in the ingress process).",
    )
    models: dict[str, DeploymentOptions] = Field(
        default_factory=dict,
        description="Per model deployment options, by deployment name (Recommender, ...) or area.",
    )

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

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        by_name = {v: v for v in MODEL_DEPLOYMENTS.values()} | MODEL_DEPLOYMENTS
        out: dict[str, Any] = {}
        for key, options in value.items():
            name = by_name.get(key)
            if name is None:
                known = ", ".join(MODEL_DEPLOYMENTS.values())
                raise ValueError(f"unknown model deployment {key!r}; known: {known}")
            if name in out:
                raise ValueError(f"model deployment {name} given twice")
            out[name] = options
        return out

    def model_options(self, name: str) -> DeploymentOptions:
        """The options of a model deployment (by name), defaults when not given."""
        return self.models.get(name) or DeploymentOptions()

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - _settings_fields())
        if unknown:
            raise ValueError(f"unknown cartwise settings: {', '.join(unknown)}")
        return value
