"""The ASGI app every server runs: the commerce API plus the Feast session push.

Used by the Serve ingress (in each replica) and by ``cartwise api`` (uvicorn, as a factory).
Importing it pulls in neither Ray nor Feast; Feast loads in the push worker thread.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def create_app(overrides: dict[str, Any] | None = None) -> FastAPI:
    """The commerce app for the settings (env plus overrides), with the session push installed."""
    from cartwise.commerce import create_app as create_commerce_app
    from cartwise.features.push import install
    from cartwise.features.settings import FeatureSettings, get_feature_settings

    settings = FeatureSettings(**overrides) if overrides else get_feature_settings()
    app = create_commerce_app(settings)
    install(app, settings)
    return app
