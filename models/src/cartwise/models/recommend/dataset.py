"""From a models ``Source`` to what the two-tower and session models train on.

Purchases come from the ``order_lines`` facts, the catalogue (and the text for the MiniLM
content vectors) from the ``products`` dimension, customer features from ``recommend_v1`` and
product features from ``product_v1`` (point in time, as of the training cut-off), and session
sequences from the ``events`` facts.

:func:`windows` fixes the time split every caller shares: train | validation (Tune) | holdout
(the gate), the holdout being the last ``holdout_days`` of purchases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.recommend.data import (
    EVENT_COLUMNS,
    Sessions,
    encode,
    product_texts,
    read_source,
    sessions_from_events,
    targets,
    window,
)
from cartwise.models.recommend.features import (
    FeatureSpec,
    category_vocabulary,
    historical_items,
    historical_users,
)
from cartwise.models.recommend.train import TowerData, tower_data

Encoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Windows:
    """The shared time split (UTC, naive): ``[.., valid) | [valid, holdout) | [holdout, end)``."""

    valid: pd.Timestamp
    holdout: pd.Timestamp
    end: pd.Timestamp

    def describe(self, start: pd.Timestamp) -> str:
        """``train_start/holdout_start``: the data window a model trained on."""
        return f"{start.date()}/{self.holdout.date()}"

    @property
    def holdout_window(self) -> str:
        """``YYYY-MM-DD/YYYY-MM-DD`` of the holdout (last day inclusive)."""
        return f"{self.holdout.date()}/{(self.end - pd.Timedelta(days=1)).date()}"


def windows(purchases: pd.DataFrame, *, holdout_days: int = 28, valid_days: int = 28) -> Windows:
    """The split from the last purchase day: the holdout is the last ``holdout_days``."""
    if len(purchases) == 0:
        raise ValueError("no purchases in the source")
    end = pd.Timestamp(purchases["ts"].max()).normalize() + pd.Timedelta(days=1)
    holdout = end - pd.Timedelta(days=holdout_days)
    valid = holdout - pd.Timedelta(days=valid_days)
    if valid <= pd.Timestamp(purchases["ts"].min()):
        raise ValueError(
            f"the data ({purchases['ts'].min()} … {purchases['ts'].max()}) is too short for a "
            f"{valid_days}-day validation and a {holdout_days}-day holdout"
        )
    return Windows(valid=valid, holdout=holdout, end=end)


@dataclass
class Catalogue:
    """The products, their text and MiniLM vectors, and the feature spec over categories."""

    products: pd.DataFrame  # product_id, name, description, category, category_id
    content: np.ndarray  # (n, 384) in ``products`` order
    spec: FeatureSpec

    def categories(self) -> dict[Any, str]:
        """Product id → category name."""
        return {
            int(p): str(c)
            for p, c in zip(self.products["product_id"], self.products["category"], strict=True)
        }


def catalogue(
    source: Any, *, encoder: Encoder | None = None, cache_dir: Path | None = None
) -> Catalogue:
    """The ``products`` dimension with MiniLM vectors of name + description + category.

    With ``cache_dir`` the vectors are kept in a file named by a digest of the texts, so a
    retrain on an unchanged catalogue skips loading the encoder (seconds to tens of seconds).
    """
    products = source.dimension("products")
    products = products.drop_duplicates("product_id").sort_values("product_id")
    products = products.reset_index(drop=True)
    texts = product_texts(products)
    cached = None
    if cache_dir is not None:
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        cached = Path(cache_dir) / f"minilm-{digest}.npy"
        if cached.is_file():
            content = np.load(cached)
            if content.shape[0] == len(texts):
                spec = FeatureSpec(categories=category_vocabulary(source))
                return Catalogue(products, content, spec)
    if encoder is None:
        from cartwise.models import text

        encoder = text.encode
    content = np.asarray(encoder(texts), dtype=np.float32)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, content)
    return Catalogue(products, content, FeatureSpec(categories=category_vocabulary(source)))


def load(
    source: Any,
    purchases: pd.DataFrame,
    cat: Catalogue,
    *,
    cutoff: pd.Timestamp,
    valid_end: pd.Timestamp | None = None,
    content_dims: int = 32,
) -> TowerData:
    """Tower data: purchases before ``cutoff``, features as of ``cutoff``, optional validation.

    The item index is the whole catalogue (products nobody bought yet included), so every
    product gets a vector from its content and features.
    """
    ids = cat.products["product_id"].astype(np.int64).to_numpy()
    train = encode(window(purchases, None, cutoff), now=cutoff, items=ids.tolist())
    if train.n_items != len(ids):
        raise ValueError("the catalogue has duplicate product ids")
    stamp = pd.Timestamp(cutoff)
    users = historical_users(source, train.user_ids.astype(np.int64).tolist(), stamp)
    items = historical_items(source, ids.tolist(), stamp)
    valid = None
    if valid_end is not None:
        valid = targets(window(purchases, cutoff, valid_end), train)
    return tower_data(
        train,
        user_inputs=cat.spec.users(users),
        item_features=cat.spec.items(items),
        content=cat.content,
        content_dims=content_dims,
        spec=cat.spec,
        valid=valid,
        categories=cat.categories(),
    )


def sessions(
    source: Any,
    item_index: dict[Any, int],
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> Sessions:
    """Product sequences of the sessions in the ``events`` facts between ``start`` and ``end``."""
    events = source.facts("events", columns=list(EVENT_COLUMNS), start=start, end=end)
    return sessions_from_events(events, item_index)


__all__ = [
    "Catalogue",
    "Windows",
    "catalogue",
    "load",
    "read_source",
    "sessions",
    "windows",
]
