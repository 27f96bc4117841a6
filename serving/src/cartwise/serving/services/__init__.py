"""The five model services the Serve deployments (and the in-process client) run.

Each is a plain class, ``Service(settings=None, config=None)``, whose public methods are
``async``, take JSON-able keyword arguments and return JSON-able dicts carrying ``model`` and
``cached``. Importing this package loads no model, Feast, Ray or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# area -> (module, class)
SERVICES: dict[str, tuple[str, str]] = {
    "recommend": ("cartwise.serving.services.recommend", "RecommenderService"),
    "search": ("cartwise.serving.services.search", "SearchService"),
    "fraud": ("cartwise.serving.services.fraud", "FraudService"),
    "customers": ("cartwise.serving.services.customers", "CustomerService"),
    "demand": ("cartwise.serving.services.demand", "DemandService"),
}


def service_class(area: str) -> type[Any]:
    """The service class of an area (imported on demand)."""
    try:
        module, name = SERVICES[area]
    except KeyError:
        raise ValueError(f"unknown area {area!r}; known: {', '.join(SERVICES)}") from None
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


def build_services(
    settings: dict[str, Any] | None = None, configs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One instance of every service (lazy: nothing loads until a method is called)."""
    configs = configs or {}
    return {area: service_class(area)(settings, configs.get(area)) for area in SERVICES}


__all__ = ["SERVICES", "build_services", "service_class"]
