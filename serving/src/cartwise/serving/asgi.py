"""The ASGI app every server runs: the commerce API, the Feast session push and the ML routes.

Used by the Serve ingress (in each replica, with Serve deployment handles as its ML client) and
by ``cartwise api`` / plain uvicorn (as a factory, with the model services in-process).
Importing it, or creating the app, pulls in neither Ray nor torch nor Feast: Feast loads in the
push worker thread, and the in-process model services load their models on the first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

if TYPE_CHECKING:
    from cartwise.serving.routes.common import MLCaller


def create_app(overrides: dict[str, Any] | None = None, ml: MLCaller | None = None) -> FastAPI:
    """The served app for the settings (env plus overrides), calling models through ``ml``.

    ``ml`` None builds the in-process client (all five services, lazily loaded).
    """
    from cartwise.commerce import create_app as create_commerce_app
    from cartwise.features.push import install as install_push
    from cartwise.features.settings import FeatureSettings, get_feature_settings
    from cartwise.serving.risk import ServingRiskScorer
    from cartwise.serving.routes import install as install_routes

    settings = FeatureSettings(**overrides) if overrides else get_feature_settings()
    app = create_commerce_app(settings)
    install_push(app, settings)
    if ml is None:
        from cartwise.serving.runtime.client import local_client_from_settings

        ml = local_client_from_settings(dict(overrides or {}))
    state = install_routes(app, ml)
    # Checkout (commerce) finds its fraud scorer here; it scores before writing the order.
    app.state.risk_scorer = ServingRiskScorer(ml, settings, fallbacks=state.fallbacks)
    return app
