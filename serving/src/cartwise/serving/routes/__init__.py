"""The ML routes of the ingress: recommendations, search, staff analytics and ML status.

:func:`install` adds them to a commerce app with the ML client they call (in-process services
or Serve deployment handles), the catalogue snapshot and the baselines they fall back to.
"""

from __future__ import annotations

from fastapi import FastAPI

from cartwise.serving.fallback import Bm25Fallback, FallbackCounter, Popularity
from cartwise.serving.routes.catalog import CatalogView
from cartwise.serving.routes.common import IngressState, MLCaller


def install(app: FastAPI, ml: MLCaller) -> IngressState:
    """Add the ML routes to ``app`` (ahead of the commerce routes) calling models through ``ml``.

    They go first because a few commerce routes take any path segment where these have a fixed
    word (``/inventory/{sku}`` vs ``/inventory/forecast``, ``/suppliers/{id}`` vs
    ``/suppliers/performance``): Starlette picks the first match.
    """
    from cartwise.serving.routes.recommend import router as recommend_router
    from cartwise.serving.routes.search import router as search_router
    from cartwise.serving.routes.staff import router as staff_router

    engine = app.state.engine
    state = IngressState(
        ml=ml,
        engine=engine,
        catalog=CatalogView(engine, app.state.storage, getattr(app.state, "cache", None)),
        popularity=Popularity(engine),
        bm25=Bm25Fallback(),
        fallbacks=FallbackCounter(),
    )
    app.state.ml = ml
    app.state.ml_ingress = state
    app.state.ml_fallbacks = state.fallbacks
    from cartwise.serving.metrics import install_ingress_metrics
    from cartwise.serving.routes.common import AREAS

    install_ingress_metrics(app, state, AREAS)
    before = len(app.router.routes)
    for router in (recommend_router, search_router, staff_router):
        app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
    app.openapi_schema = None
    return state


__all__ = ["IngressState", "install"]
