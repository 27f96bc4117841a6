"""The five model deployments: Recommender, Search, FraudScorer, CustomerInsights, DemandPlanner.

Each is a :class:`ModelServer` replica hosting one model service of
``cartwise.serving.services`` (plain classes, also run in-process by ``LocalMLClient``). The
replica imports the service class by path, so the driver that builds the application never
imports torch, Feast or the models. The ingress calls a service method through the deployment
handle (``handle.options(method_name="recommend").remote(**kwargs)``); ``ModelServer`` passes
public attribute lookups through to the service, so every async service method is callable.

Hot reload: each service's ``ModelHolder`` follows its alias in the background (every
``reload_interval_s``), so a promotion needs no redeploy. The Serve ``user_config`` (``alias``,
``reload_interval_s``, ``cache_ttl_s``, ``warmup``, batching) reaches the service's
``reconfigure``: in place with ``serve deploy`` of a config (the code version is unchanged);
``serve.run`` from Python gives every deployment a new version, so Serve replaces the replicas
one by one instead.

Resources on 2 cores (defaults in ``cartwise.serving.args``): one replica each, 0.2 CPU
reserved (the ingress reserves 1, so all six fit on a 2-CPU Ray), ``max_ongoing_requests`` 32,
autoscaling off (configurable per deployment through ``AppArgs.models``): on 2 cores a second
replica only adds a process competing for the same cores and a second copy of the model.

Batching, measured on the trained test shop (2 busy cores): in-process, ``FraudService``
scores one order in ~9 ms, 8 in ~11.5 ms and 32 in ~27 ms (one Feast read and one forward pass
for the lot); through the handle, ``FraudScorer.score`` batched vs not gave 52 vs 40 requests/s
at 8 concurrent checkouts and 78 vs 41 at 32 (p50 0.33 s vs 0.73 s), 39 vs 30 at 1. So
``score`` goes through ``@serve.batch`` (up to 16 orders, waiting at most 2 ms for a batch to
fill; ``max_batch_size`` and ``batch_wait_timeout_s`` are user_config keys, 1 turns it off).
Recommend and search answer in ~3 ms of numpy per call and their inputs differ per shopper
(session features, filters), so a Serve batch would only add its wait: no ``@serve.batch``
there. What does batch well in search is MiniLM's query encoding (~10 ms alone, ~2.8 ms a
query in a batch of 8): the searches that miss the caches share forward passes through
``cartwise.models.text.shared_encoder``, which never waits for a batch to fill.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ray import serve

from cartwise.serving.args import MODEL_DEPLOYMENTS, AppArgs, DeploymentOptions
from cartwise.serving.runtime.client import SERVICE_PATHS, import_object

if TYPE_CHECKING:
    from ray.serve import Application
    from ray.serve.deployment import Deployment

log = logging.getLogger(__name__)

# user_config keys handled by the replica itself, not passed to the service.
_SERVER_KEYS = frozenset({"warmup", "max_batch_size", "batch_wait_timeout_s"})
FRAUD_MAX_BATCH_SIZE = 16
FRAUD_BATCH_WAIT_S = 0.002


class ModelServer:
    """A Serve replica hosting one model service (``"module:Class"``, built in the replica)."""

    def __init__(
        self,
        service: str,
        settings: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        cls = import_object(service)
        self._service_path = service
        config = dict(config or {})
        self._warmup = bool(config.get("warmup", True))
        self._service: Any = cls(
            settings=dict(settings or {}),
            config={k: v for k, v in config.items() if k not in _SERVER_KEYS},
        )

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's user_config hook: apply it to the service, then warm the model up.

        Serve routes no request to a new replica before this returns, so a replica that
        replaces a dead one answers its first request with the model already loaded. A model
        that cannot load (not trained yet) is logged; the service answers ModelUnavailable.
        """
        config = dict(config or {})
        self._warmup = bool(config.pop("warmup", self._warmup))
        self._configure_server({k: config.pop(k) for k in _SERVER_KEYS & set(config)})
        hook = getattr(self._service, "reconfigure", None)
        if hook is not None:
            hook(config)
        warmup = getattr(self._service, "warmup", None)
        if self._warmup and warmup is not None:
            try:
                await warmup()
            except Exception as exc:
                log.warning("%s: warm-up failed: %s", self._service_path, exc)
        from cartwise.serving.runtime.heap import freeze_heap

        # The model and its libraries are loaded: full collections stop walking them.
        freeze_heap()

    def _configure_server(self, config: dict[str, Any]) -> None:
        """Apply the replica's own user_config keys (batching, in subclasses)."""

    def __del__(self) -> None:
        # Serve's graceful shutdown: write what the service's feature log still buffers.
        close = getattr(self.__dict__.get("_service"), "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        # Only called for names the server lacks: the service's public methods.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.__dict__["_service"], name)


class FraudServer(ModelServer):
    """The FraudScorer replica: concurrent ``score`` calls are scored as one batch."""

    async def score(self, *, request: dict[str, Any]) -> dict[str, Any]:
        """Score one order (batched with the orders arriving at the same time)."""
        result, error = await self._score_batch(request)
        if error is not None:
            raise error
        assert result is not None
        return result

    @serve.batch(max_batch_size=FRAUD_MAX_BATCH_SIZE, batch_wait_timeout_s=FRAUD_BATCH_WAIT_S)
    async def _score_batch(
        self, requests: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any] | None, Exception | None]]:
        many = getattr(self._service, "score_many", None)
        if many is not None and len(requests) > 1:
            try:
                results = await many(requests=requests)
                return [(r, None) for r in results]
            except Exception:
                # One bad order must not fail the others in its batch: score them one by one.
                log.debug("batch of %d failed; scoring one by one", len(requests), exc_info=True)
        out: list[tuple[dict[str, Any] | None, Exception | None]] = []
        for request in requests:
            try:
                out.append((await self._service.score(request=request), None))
            except Exception as exc:
                out.append((None, exc))
        return out

    def _configure_server(self, config: dict[str, Any]) -> None:
        batch: Any = self._score_batch
        if "max_batch_size" in config:
            batch.set_max_batch_size(max(1, int(config["max_batch_size"])))
        if "batch_wait_timeout_s" in config:
            batch.set_batch_wait_timeout_s(max(0.0, float(config["batch_wait_timeout_s"])))


# The replica class per area (the others need no replica-side logic).
_SERVERS: dict[str, type[ModelServer]] = {"fraud": FraudServer}


def model_deployment(area: str, options: DeploymentOptions | None = None) -> Deployment:
    """The Serve deployment of an area with its options (defaults for 2 cores)."""
    name = MODEL_DEPLOYMENTS[area]
    opts = options or DeploymentOptions()
    server = _SERVERS.get(area, ModelServer)
    deployment: Deployment = serve.deployment(name=name)(server)
    return deployment.options(**opts.serve_options())


def bind_models(args: AppArgs) -> dict[str, Application]:
    """The five model deployments bound with the app's settings, by area."""
    bound: dict[str, Application] = {}
    for area, name in MODEL_DEPLOYMENTS.items():
        opts = args.model_options(name)
        service = opts.service or SERVICE_PATHS[area]
        bound[area] = model_deployment(area, opts).bind(
            service, dict(args.settings), opts.effective_user_config()
        )
    return bound


Recommender = model_deployment("recommend")
Search = model_deployment("search")
FraudScorer = model_deployment("fraud")
CustomerInsights = model_deployment("customers")
DemandPlanner = model_deployment("demand")
