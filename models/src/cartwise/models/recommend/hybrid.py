"""The hybrid: a learned re-ranker over repurchase, collaborative and popularity signals.

Stage one picks candidates per customer: their own past items, the top of a collaborative
scorer (EASE, BPR...) and the recently popular items. Stage two scores each candidate with a
small PyTorch MLP (:class:`~.model.Reranker`) over features of the pair (how often and how
lately the customer bought it, how "due" it is given their own rhythm, collaborative scores
and ranks, popularity and its trend, how often the item is re-bought by anyone, the
customer's activity). It is trained on *labels from later windows inside the training
period*: features at a cut-off, label = bought in the following weeks.

Items outside the candidates keep the fallback scorer's order, below every candidate, so the
ranking stays a full ranking over all items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp  # type: ignore[import-untyped]

from cartwise.models.recommend.baselines import minmax_rows, scale_rows_by_max
from cartwise.models.recommend.data import Interactions
from cartwise.models.recommend.metrics import top_k

ScoreFn = Callable[[np.ndarray], np.ndarray]

USER_FEATURES = ("user_orders", "user_last_age", "user_first_age", "user_items")
ITEM_FEATURES = ("pop", "pop28", "pop7", "trend", "repeat_rate")
PAIR_FEATURES = (
    "own_lines",
    "own_decay30",
    "own_decay180",
    "last_age",
    "bought",
    "first_age",
    "interval",
    "due",
)


def feature_names(scorers: Sequence[str]) -> list[str]:
    """The feature columns, in order, for the given collaborative scorer names."""
    collab = [f"{name}_{kind}" for name in scorers for kind in ("score", "rank")]
    return [*PAIR_FEATURES, *collab, *ITEM_FEATURES, *USER_FEATURES]


@dataclass
class Context:
    """Per-user and per-item statistics of one training period, computed once."""

    data: Interactions
    lines: sp.csr_matrix
    decay30: sp.csr_matrix
    decay180: sp.csr_matrix
    last: sp.csr_matrix  # 1 + days since last bought (0: never)
    first: sp.csr_matrix  # 1 + days since first bought
    items: np.ndarray  # (n_items, len(ITEM_FEATURES))
    users: np.ndarray  # (n_users, len(USER_FEATURES))
    pop28: np.ndarray = field(default_factory=lambda: np.zeros(0))


def context(data: Interactions) -> Context:
    """The statistics the features need, from one period's interactions."""
    lines = data.counts()
    frame = pd.DataFrame({"u": data.user, "i": data.item, "a": data.age_days})
    ages = frame.groupby(["u", "i"], sort=True)["a"].agg(["min", "max"])
    rows = ages.index.get_level_values(0).to_numpy()
    cols = ages.index.get_level_values(1).to_numpy()
    shape = (data.n_users, data.n_items)
    last = sp.csr_matrix((ages["min"].to_numpy() + 1.0, (rows, cols)), shape=shape)
    first = sp.csr_matrix((ages["max"].to_numpy() + 1.0, (rows, cols)), shape=shape)
    pop, pop28, pop7 = data.popularity(), data.popularity(28), data.popularity(7)
    buyers = np.bincount(lines.indices, minlength=data.n_items)
    rebuyers = np.bincount(lines.indices[lines.data >= 2], minlength=data.n_items)
    item_feats = np.column_stack(
        [
            np.log1p(pop),
            np.log1p(pop28),
            np.log1p(pop7),
            np.log((pop28 + 1.0) / (pop + 1.0)),
            (rebuyers + 0.1) / (buyers + 1.0),  # smoothed: a one-buyer item is not "100%"
        ]
    )
    by_user = pd.DataFrame({"u": data.user, "o": data.order, "a": data.age_days}).groupby("u")
    index = pd.RangeIndex(data.n_users)
    user_feats = np.column_stack(
        [
            np.log1p(by_user["o"].nunique().reindex(index, fill_value=0).to_numpy()),
            np.log1p(by_user["a"].min().reindex(index, fill_value=0).to_numpy()),
            np.log1p(by_user["a"].max().reindex(index, fill_value=0).to_numpy()),
            np.log1p(np.diff(lines.indptr)),
        ]
    )
    return Context(
        data=data,
        lines=lines,
        decay30=data.decayed(30),
        decay180=data.decayed(180),
        last=last,
        first=first,
        items=item_feats,
        users=user_feats,
        pop28=pop28,
    )


@dataclass
class Candidates:
    """Candidate (user, item) pairs of a batch of users and their feature rows."""

    user: np.ndarray  # (n,) user index
    item: np.ndarray  # (n,) item index
    features: np.ndarray  # (n, n_features) float32


def candidates(
    ctx: Context,
    users: np.ndarray,
    scorers: Mapping[str, ScoreFn],
    *,
    n_collab: int = 100,
    n_popular: int = 50,
    max_own: int = 200,
) -> Candidates:
    """Candidates and features for ``users``: own items, each scorer's top, recent bestsellers."""
    n_items = ctx.data.n_items
    lines = np.asarray(ctx.lines[users].toarray(), dtype=np.float64)
    mask = lines > 0
    heavy = mask.sum(axis=1) > max_own
    if heavy.any():
        # Very heavy buyers: keep only their most bought items, or candidates explode.
        keep = top_k(
            lines[heavy] + 1e-6 * np.asarray(ctx.decay180[users[heavy]].toarray()), max_own
        )
        trimmed = np.zeros((int(heavy.sum()), n_items), dtype=bool)
        np.put_along_axis(trimmed, keep, True, axis=1)
        mask[heavy] = trimmed
    collab: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, score in scorers.items():
        raw = np.asarray(score(users), dtype=np.float64)
        ranks = np.empty_like(raw)
        order = np.argsort(-raw, axis=1, kind="stable")
        np.put_along_axis(ranks, order, np.arange(n_items, dtype=np.float64)[None, :], axis=1)
        np.put_along_axis(mask, order[:, :n_collab], True, axis=1)
        collab[name] = (minmax_rows(raw), np.log1p(ranks))
    mask[:, np.argsort(-ctx.pop28, kind="stable")[:n_popular]] = True
    rows, cols = np.nonzero(mask)
    last = np.asarray(ctx.last[users].toarray())[rows, cols]
    first = np.asarray(ctx.first[users].toarray())[rows, cols]
    count = lines[rows, cols]
    repeat = count >= 2
    interval = np.where(repeat, (first - last) / np.maximum(count - 1, 1), 0.0)
    due = np.where(repeat, (last - 1) / np.maximum(interval, 1.0), 0.0)
    columns = [
        np.log1p(count),
        scale_rows_by_max(np.asarray(ctx.decay30[users].toarray()))[rows, cols],
        scale_rows_by_max(np.asarray(ctx.decay180[users].toarray()))[rows, cols],
        np.log1p(last),
        (last > 0).astype(np.float64),
        np.log1p(first),
        np.log1p(interval),
        np.log1p(due),
    ]
    for scaled, ranks in collab.values():
        columns += [scaled[rows, cols], ranks[rows, cols]]
    features = np.column_stack([*columns, ctx.items[cols], ctx.users[users[rows]]])
    return Candidates(users[rows], cols, features.astype(np.float32))


def build(
    ctx: Context,
    users: np.ndarray,
    scorers: Mapping[str, ScoreFn],
    *,
    batch: int = 256,
    **options: Any,
) -> Candidates:
    """:func:`candidates` over all ``users`` in batches (bounded memory)."""
    parts = [
        candidates(ctx, users[start : start + batch], scorers, **options)
        for start in range(0, len(users), batch)
    ]
    return Candidates(
        np.concatenate([p.user for p in parts]),
        np.concatenate([p.item for p in parts]),
        np.vstack([p.features for p in parts]),
    )


def labels(cands: Candidates, truth: Mapping[int, set[int]]) -> np.ndarray:
    """1.0 where the candidate was bought in the label window."""
    return np.fromiter(
        (
            i in truth.get(u, ())
            for u, i in zip(cands.user.tolist(), cands.item.tolist(), strict=True)
        ),
        dtype=np.float32,
        count=len(cands.user),
    )


def mlp_forward(weights: Sequence[np.ndarray], features: np.ndarray) -> np.ndarray:
    """The re-ranker's logits in numpy (no torch at inference): see ``Reranker.export``."""
    mean, std, *layers = weights
    x = (features.astype(np.float32) - mean) / std
    for k in range(0, len(layers), 2):
        x = x @ layers[k] + layers[k + 1]
        if k + 2 < len(layers):
            x = np.maximum(x, 0.0)
    out: np.ndarray = x[:, 0].astype(np.float64)
    return out


@dataclass
class Hybrid:
    """Re-ranked scores: candidates by the MLP, every other item behind them by ``fallback``."""

    ctx: Context
    scorers: Mapping[str, ScoreFn]
    weights: Sequence[np.ndarray]
    fallback: ScoreFn
    options: dict[str, Any] = field(default_factory=dict)

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (len(users), n_items): candidates above all others."""
        cands = candidates(self.ctx, users, self.scorers, **self.options)
        logits = mlp_forward(self.weights, cands.features)
        base = minmax_rows(np.asarray(self.fallback(users), dtype=np.float64))
        # Non-candidates keep the fallback order, strictly below the lowest candidate logit.
        floor = (float(logits.min()) if len(logits) else 0.0) - 2.0
        out: np.ndarray = floor + base
        position = {int(u): r for r, u in enumerate(users.tolist())}
        rows = np.array([position[int(u)] for u in cands.user.tolist()], dtype=np.int64)
        out[rows, cands.item] = logits
        return out


__all__ = [
    "ITEM_FEATURES",
    "PAIR_FEATURES",
    "USER_FEATURES",
    "Candidates",
    "Context",
    "Hybrid",
    "build",
    "candidates",
    "context",
    "feature_names",
    "labels",
    "mlp_forward",
]
