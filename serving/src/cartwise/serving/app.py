"""The Ray Serve application: the commerce FastAPI app as the ingress, composed with the models.

The ingress (``CommerceAPI``) gets a ``DeploymentHandle`` per model deployment (Recommender,
Search, FraudScorer, CustomerInsights, DemandPlanner; see ``cartwise.serving.deployments``) and
calls them through ``HandleMLClient``. With ``AppArgs.ml`` false only the ingress is deployed.

Deploy it with ``cartwise serve``, with ``serve run cartwise.serving.app:build_app`` or with a
Serve config whose ``import_path`` is ``cartwise.serving.app:build_app`` (its ``args`` are an
``AppArgs``). The FastAPI app, its engine and its Redis client are built inside each replica by
``__serve_build_asgi_app__``, never at import time and never on the driver: Ray pickles the
deployment class, and connection pools must not cross processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ray import serve

from cartwise.serving.args import DEFAULT_MAX_ONGOING_REQUESTS, MODEL_DEPLOYMENTS, AppArgs

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve import Application
    from ray.serve.handle import DeploymentHandle
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_NAME = "cartwise"
DEPLOYMENT_NAME = "CommerceAPI"

__all__ = [
    "APP_NAME",
    "DEPLOYMENT_NAME",
    "MODEL_DEPLOYMENTS",
    "AppArgs",
    "CommerceIngress",
    "build_app",
]


class SingleRequestIdHeader:
    """Drop the app's ``X-Request-Id`` response header: Serve's ingress adds its own.

    Serve puts the request id on the request (the client's, or a new one) before the app sees
    it, so the app adopts the same id for its logs, and Serve echoes it on every response. The
    app's copy would make the header appear twice. (An id the app rejects as malformed is
    still echoed by Serve; the app logs its own replacement.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Filter the header out of the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_without_own_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
            await send(message)

        await self.app(scope, receive, send_without_own_id)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS)
@serve.ingress()
class CommerceIngress:
    """The commerce API plus the ML routes; each replica builds its own FastAPI app.

    ``handles`` maps an area (``recommend``, ...) to its model deployment's handle (Serve
    replaces the bound deployments given to ``bind`` with handles). Without handles the ML
    routes run the models in this process.
    """

    def __init__(
        self,
        settings: dict[str, Any] | None = None,
        handles: dict[str, DeploymentHandle[Any]] | None = None,
    ) -> None:
        self._overrides = dict(settings or {})
        self._handles = dict(handles or {})

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Build the FastAPI app in the replica (Serve calls this after ``__init__``)."""
        from cartwise.serving.asgi import create_app
        from cartwise.serving.runtime.client import HandleMLClient

        # Without model deployments (ml=False), create_app runs the services in this process.
        ml = HandleMLClient(self._handles) if self._handles else None
        if ml is not None:
            ml.prime()
        app = create_app(self._overrides, ml=ml)
        # Outermost, so it sees the headers the app's own middleware added.
        app.add_middleware(SingleRequestIdHeader)
        from cartwise.serving.runtime.heap import freeze_heap

        # Imports and the app are built: full collections stop walking them (tail latency).
        freeze_heap()
        return app

    def __del__(self) -> None:
        from cartwise.platform.db import dispose_engines

        dispose_engines()


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """The Serve application (ingress + model deployments); ``args`` is validated as ``AppArgs``."""
    parsed = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    handles: dict[str, Application] = {}
    if parsed.ml:
        from cartwise.serving.deployments import bind_models

        handles = bind_models(parsed)
    # The decorators turn the class into a Serve Deployment, which mypy cannot see.
    deployment = cast("Any", CommerceIngress).options(
        num_replicas=parsed.num_replicas,
        max_ongoing_requests=parsed.max_ongoing_requests,
        max_queued_requests=parsed.max_queued_requests,
        ray_actor_options={"num_cpus": parsed.num_cpus},
    )
    application: Application = deployment.bind(parsed.settings, handles)
    return application
