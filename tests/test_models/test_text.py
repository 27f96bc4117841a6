"""MiniLM query encoding shared by concurrent callers (``SharedEncoder``).

The batching itself (``cartwise.platform.combine``) is tested in ``tests/test_platform``.
"""

from __future__ import annotations

import threading

import numpy as np

from cartwise.models.text import DIM, SharedEncoder, encode, shared_encoder


def test_the_shared_encoder_gives_minilm_vectors() -> None:
    texts = ["red wooden chair", "oak side table", "red wooden chair"]
    shared = shared_encoder()
    assert shared is shared_encoder()
    got = shared(texts)
    assert got.shape == (3, DIM)
    np.testing.assert_allclose(got, encode(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_concurrent_queries_share_minilm_calls_and_get_their_own_vectors() -> None:
    texts = [f"wooden chair number {i}" for i in range(24)]
    expected = encode(texts)
    shared = SharedEncoder()
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(texts))

    def one(i: int) -> None:
        start.wait()
        got[i] = shared([texts[i]])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(len(texts)):
        np.testing.assert_allclose(got[i], expected[i], atol=1e-5)
    assert shared.combiner.items == len(texts)
    assert shared.combiner.calls < len(texts)  # some callers shared a forward pass
    assert shared([]).shape == (0, DIM)
