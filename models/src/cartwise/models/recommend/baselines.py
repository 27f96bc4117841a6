"""Baselines in numpy/scipy: popularity, item-kNN, EASE, repurchase, and blends of them.

Each is a *scorer*: ``fit(data)`` learns from :class:`~.data.Interactions`, and
``score(users)`` returns a dense (len(users), n_items) matrix where higher is better. All are
deterministic; none needs torch.

Repurchase (the customer's own past items first) is famously hard to beat in repeat-purchase
retail (TIFU-KNN, Hu et al. 2020; Li et al. 2023, "A Next Basket Recommendation Reality
Check"), so the blends put a collaborative scorer behind or beside it.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

from cartwise.models.recommend.data import Interactions


class Scorer(Protocol):
    """Anything that scores every item for a batch of users."""

    def fit(self, data: Interactions) -> Scorer:
        """Learn from the training interactions; returns self."""
        ...

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (len(users), n_items); higher is better."""
        ...


def _dense_rows(matrix: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    rows: np.ndarray = np.asarray(matrix[users].toarray(), dtype=np.float64)
    return rows


def minmax_rows(scores: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1] (constant rows become 0), so scorers can be blended."""
    low = scores.min(axis=1, keepdims=True)
    span = scores.max(axis=1, keepdims=True) - low
    scaled: np.ndarray = (scores - low) / np.where(span > 0, span, 1.0)
    return scaled


def scale_rows_by_max(rows: np.ndarray) -> np.ndarray:
    """Each non-negative row divided by its maximum (all-zero rows stay zero)."""
    top = rows.max(axis=1, keepdims=True)
    scaled: np.ndarray = rows / np.where(top > 0, top, 1.0)
    return scaled


class Popularity:
    """The same ranking for everyone: items by distinct buyers (optionally in a recent window)."""

    def __init__(self, window_days: float | None = None) -> None:
        self.window_days = window_days
        self.counts = np.zeros(0)

    def fit(self, data: Interactions) -> Popularity:
        """Count distinct buyers per item."""
        self.counts = data.popularity(self.window_days)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """Popularity, the same row for every user."""
        return np.tile(self.counts, (len(users), 1))


class ItemKNN:
    """Item-based kNN: cosine similarity on the binary user-item matrix, top-k neighbours."""

    def __init__(self, neighbours: int = 100, shrink: float = 0.0) -> None:
        if neighbours <= 0:
            raise ValueError("neighbours must be positive")
        self.neighbours = neighbours
        self.shrink = shrink
        self.similarity = sp.csr_matrix((0, 0))
        self.history = sp.csr_matrix((0, 0))

    def fit(self, data: Interactions) -> ItemKNN:
        """Cosine similarities between items, keeping each item's k nearest neighbours."""
        x = data.binary()
        co = np.asarray((x.T @ x).toarray(), dtype=np.float64)
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        n = sim.shape[0]
        k = min(self.neighbours, n - 1) if n > 1 else 0
        if 0 < k < n:
            # Keep, per target item (column), only its k most similar source items.
            cut = np.argpartition(-sim, k - 1, axis=0)[:k]
            mask = np.zeros_like(sim, dtype=bool)
            np.put_along_axis(mask, cut, True, axis=0)
            sim = np.where(mask, sim, 0.0)
        self.similarity = sp.csr_matrix(sim.astype(np.float32))
        self.history = x
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """Sum of similarities from each user's items to every item."""
        scores: np.ndarray = np.asarray((self.history[users] @ self.similarity).toarray())
        return scores.astype(np.float64)


def ease_weights(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE's closed form (Steck 2019): ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹``.

    The diagonal of B is zero, so an item never recommends itself through itself.
    """
    if lam <= 0:
        raise ValueError("lambda must be positive")
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASE:
    """Embarrassingly Shallow Autoencoder: a closed-form item-item model."""

    def __init__(self, lam: float = 500.0) -> None:
        self.lam = lam
        self.weights = np.zeros((0, 0), dtype=np.float32)
        self.history = sp.csr_matrix((0, 0))

    def fit(self, data: Interactions) -> EASE:
        """Solve for the item-item weights on the binary user-item matrix."""
        self.history = data.binary()
        self.weights = ease_weights(self.history, self.lam).astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """The user's purchase row times the item-item weights."""
        scores: np.ndarray = np.asarray(self.history[users] @ self.weights, dtype=np.float64)
        return scores


class Repurchase:
    """The customer's own past items (by recency-weighted frequency), then popularity.

    Own items score in (1, 2], every other item in [0, 1] by popularity, so a customer's
    own items always come first.
    """

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days
        self.own = sp.csr_matrix((0, 0))
        self.popularity = np.zeros(0)

    def fit(self, data: Interactions) -> Repurchase:
        """Weight each user's purchase lines by recency; count item popularity."""
        self.own = data.decayed(self.half_life_days)
        pop = data.popularity()
        self.popularity = pop / max(float(pop.max()), 1.0)
        return self

    def own_scores(self, users: np.ndarray) -> np.ndarray:
        """Own-item weights scaled per user to (0, 1]; 0 for items never bought."""
        return scale_rows_by_max(_dense_rows(self.own, users))

    def score(self, users: np.ndarray) -> np.ndarray:
        """Own items first (by weight), then popular items."""
        own = self.own_scores(users)
        return np.where(own > 0, 1.0 + own, self.popularity[None, :] * 0.999)


def blend_repurchase(own: np.ndarray, collaborative: np.ndarray, weight: float) -> np.ndarray:
    """``weight * own + collaborative`` (both scaled to [0, 1] per user); ``inf`` stacks.

    Stacking puts every own item (by its own weight) before every other item (by the
    collaborative score); a finite weight lets a strong collaborative signal overtake a
    weak own item. ``weight=0`` is the collaborative scorer alone.
    """
    collab = minmax_rows(collaborative)
    if math.isinf(weight):
        stacked: np.ndarray = np.where(own > 0, 2.0 + own, collab)
        return stacked
    blended: np.ndarray = weight * own + collab
    return blended


class RepurchaseBlend:
    """Repurchase combined with a collaborative scorer (EASE, BPR, item-kNN...).

    See :func:`blend_repurchase` for ``weight`` (``math.inf``: own items first, then the
    collaborative ranking fills).
    """

    def __init__(
        self,
        collaborative: Scorer,
        *,
        weight: float = math.inf,
        half_life_days: float | None = None,
        fitted: bool = False,
    ) -> None:
        self.collaborative = collaborative
        self.weight = weight
        self.repurchase = Repurchase(half_life_days)
        self.fitted = fitted  # the collaborative scorer is already fitted (reuse it)

    def fit(self, data: Interactions) -> RepurchaseBlend:
        """Fit the repurchase part (and the collaborative one unless already fitted)."""
        self.repurchase.fit(data)
        if not self.fitted:
            self.collaborative.fit(data)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """The blended (or stacked) scores."""
        own = self.repurchase.own_scores(users)
        return blend_repurchase(own, self.collaborative.score(users), self.weight)


class SessionTransitions:
    """Session baseline: items that followed the session's last item (then its earlier ones).

    ``C[a, b]`` counts how often ``b`` came within ``window`` steps after ``a`` in training
    sessions (nearer steps weigh more); the score of ``b`` is ``C[last, b]`` plus a smaller
    share from the earlier items, and popularity breaks ties.
    """

    def __init__(self, window: int = 3, history_weight: float = 0.3) -> None:
        self.window = window
        self.history_weight = history_weight
        self.transitions = sp.csr_matrix((0, 0))
        self.popularity = np.zeros(0)

    def fit(self, sequences: list[np.ndarray], n_items: int) -> SessionTransitions:
        """Count the transitions of the training sessions."""
        rows, cols, vals = [], [], []
        for seq in sequences:
            for gap in range(1, self.window + 1):
                if len(seq) > gap:
                    rows.append(seq[:-gap])
                    cols.append(seq[gap:])
                    vals.append(np.full(len(seq) - gap, 1.0 / gap))
        shape = (n_items, n_items)
        if rows:
            self.transitions = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
            )
        else:
            self.transitions = sp.csr_matrix(shape)
        counts = np.bincount(np.concatenate(sequences), minlength=n_items) if sequences else None
        pop = np.zeros(n_items) if counts is None else counts.astype(np.float64)
        self.popularity = pop / max(float(pop.max()), 1.0)
        return self

    def scores(self, sequences: list[list[int]]) -> np.ndarray:
        """Next-item scores (len(sequences), n_items) after each sequence (oldest first)."""
        out = np.tile(1e-3 * self.popularity, (len(sequences), 1))
        for r, seq in enumerate(sequences):
            if not seq:
                continue
            out[r] += np.asarray(self.transitions[seq[-1]].toarray()).ravel()
            if len(seq) > 1 and self.history_weight > 0:
                earlier = np.asarray(self.transitions[seq[:-1]].sum(axis=0)).ravel()
                out[r] += self.history_weight * earlier / (len(seq) - 1)
        return out


__all__ = [
    "EASE",
    "ItemKNN",
    "Popularity",
    "Repurchase",
    "RepurchaseBlend",
    "Scorer",
    "SessionTransitions",
    "blend_repurchase",
    "ease_weights",
    "minmax_rows",
    "scale_rows_by_max",
]
