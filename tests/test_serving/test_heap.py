"""The start-up heap leaves garbage collection: at the ingress, in a model replica, in-process."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from cartwise.serving.runtime import heap


class TinyService:
    """A model service that loads nothing (for ``ModelServer``)."""

    def __init__(self, settings: dict[str, Any], config: dict[str, Any]) -> None:
        self.config = config
        self.warmed = False

    async def warmup(self) -> dict[str, Any]:
        self.warmed = True
        return {}


@pytest.fixture
def freezes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Record each freeze (the real one runs: frozen objects are counted, then released)."""
    counts: list[int] = []
    real = heap.freeze_heap

    def recording(**kwargs: Any) -> int:
        counts.append(real(**kwargs))
        return counts[-1]

    monkeypatch.setattr(heap, "freeze_heap", recording)
    try:
        yield counts
    finally:
        gc.unfreeze()


def test_freeze_moves_the_live_heap_out_of_collections() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(1000)]
    try:
        frozen = heap.freeze_heap()
        assert frozen > len(survivor)
        # Still frozen now (a few objects of this busy process may have died since).
        assert gc.get_freeze_count() > frozen // 2
        # Objects made after the freeze are still tracked by ordinary collections.
        later = [[] for _ in range(10)]
        assert all(gc.is_tracked(x) for x in later)
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_the_ingress_freezes_once_its_app_is_built(freezes: list[int], settings: Any) -> None:
    from cartwise.serving.app import CommerceIngress

    build = CommerceIngress.func_or_class.__serve_build_asgi_app__  # type: ignore[attr-defined]
    replica = SimpleNamespace(
        _overrides={**settings.model_dump(), "feast_push_enabled": False}, _handles={}
    )
    app = build(replica)
    assert app.state.ml_ingress is not None
    assert len(freezes) == 1
    assert freezes[0] > 0


def test_a_model_replica_freezes_after_its_warm_up(freezes: list[int]) -> None:
    from cartwise.serving.deployments import ModelServer

    server = ModelServer(f"{__name__}:TinyService")
    asyncio.run(server.reconfigure({"warmup": True, "alias": "champion"}))
    assert server._service.warmed
    assert len(freezes) == 1


def test_the_in_process_client_freezes_after_building_a_service(freezes: list[int]) -> None:
    from cartwise.serving.runtime.client import LocalMLClient

    class Echo:
        async def echo(self, **kwargs: Any) -> dict[str, Any]:
            return dict(kwargs)

    client = LocalMLClient(factories={"recommend": Echo})
    answer = asyncio.run(client.call("recommend", "echo", timeout_s=5.0, x=1))
    assert answer == {"x": 1}
    asyncio.run(client.call("recommend", "echo", timeout_s=5.0, x=2))
    assert len(freezes) == 1  # built, and frozen, once


def test_a_full_freeze_frees_the_cycles_of_what_was_frozen_before() -> None:
    import weakref

    class Node:
        other: Any = None

    gc.unfreeze()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        heap.freeze_heap()
        assert gc.is_tracked(a)
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: ordinary collections skip it
        heap.freeze_heap()  # an ordinary freeze walks only what is new
        assert gone() is not None
        heap.freeze_heap(full=True)  # the watcher's, once frozen objects piled up
        assert gone() is None
    finally:
        gc.unfreeze()


def test_each_prepared_model_version_is_frozen_once(freezes: list[int]) -> None:
    from cartwise.serving.services.base import ServiceBase

    class Prepared(ServiceBase):
        area = "recommend"

        def __init__(self) -> None:
            super().__init__({}, {})
            self.prepared: list[int] = []

        def prepare(self, loaded: Any) -> None:
            self.prepared.append(loaded.version)

    service = Prepared()
    v1, v2 = SimpleNamespace(name="m", version=1), SimpleNamespace(name="m", version=2)
    service._prepare_once(v1)  # type: ignore[arg-type]
    service._prepare_once(v1)  # type: ignore[arg-type]
    assert service.prepared == [1]
    assert len(freezes) == 1
    service._prepare_once(v2)  # type: ignore[arg-type]  # a hot reload
    assert service.prepared == [1, 2]
    assert len(freezes) == 2


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """The collection watcher installed, with its state restored afterwards."""
    state = heap._Watch
    saved = (state.full_count, state.pending_full, state.slow_freezes)
    heap.watch_collections()
    try:
        yield state
    finally:
        state.full_count, state.pending_full, state.slow_freezes = saved
        gc.unfreeze()


def test_a_slow_full_collection_freezes_its_survivors(
    watched: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.unfreeze()
    survivors = [[i] for i in range(10_000)]
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_MS", 1e9)
    gc.collect()
    assert gc.get_freeze_count() == 0  # a quick collection changes nothing
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_MS", 0.0)
    before = watched.slow_freezes  # type: ignore[attr-defined]
    gc.collect()
    assert watched.slow_freezes == before + 1  # type: ignore[attr-defined]
    assert gc.get_freeze_count() > len(survivors)
    # A young collection is never the watcher's business.
    gc.unfreeze()
    gc.collect(0)
    assert gc.get_freeze_count() == 0


def test_once_frozen_survivors_pile_up_a_full_freeze_is_asked_for_and_run(
    watched: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_MS", 0.0)
    full = heap.freeze_heap(full=True)
    assert not heap.maybe_full_freeze()  # nothing piled up yet
    watched.full_count = full // 2  # type: ignore[attr-defined]  # as if the heap had doubled
    gc.collect()
    assert watched.pending_full  # type: ignore[attr-defined]
    assert heap.maybe_full_freeze()
    assert not watched.pending_full  # type: ignore[attr-defined]
    # It starts counting again from the new full freeze (not the halved figure).
    assert watched.full_count > full // 2  # type: ignore[attr-defined]
