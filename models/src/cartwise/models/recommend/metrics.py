"""Top-K ranking metrics with full ranking over every item.

Relevance is binary: an item is relevant when the user bought it in the test window.

- ``NDCG@k``: DCG over the top k (gain 1 at rank r counts ``1 / log2(r + 1)``, r from 1),
  divided by the ideal DCG of ``min(|truth|, k)`` hits.
- ``Recall@k``: hits in the top k divided by ``|truth|`` (RecBole's definition; papers that
  divide by ``min(|truth|, k)`` report larger numbers on long baskets).

Users with an empty truth set are skipped, never counted as zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

Scores = Callable[[np.ndarray], np.ndarray]


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(ranked: Sequence[int] | np.ndarray, truth: Collection[int], k: int) -> float:
    """NDCG@k of one ranked list against a set of relevant items."""
    if k <= 0:
        raise ValueError("k must be positive")
    if not truth:
        raise ValueError("truth is empty: NDCG is undefined")
    top = list(ranked)[:k]
    gains = np.array([1.0 if item in truth else 0.0 for item in top])
    disc = _discounts(k)
    dcg = float((gains * disc[: len(gains)]).sum())
    ideal = float(disc[: min(len(truth), k)].sum())
    return dcg / ideal


def recall_at_k(ranked: Sequence[int] | np.ndarray, truth: Collection[int], k: int) -> float:
    """Recall@k of one ranked list: hits in the top k over the number of relevant items."""
    if k <= 0:
        raise ValueError("k must be positive")
    if not truth:
        raise ValueError("truth is empty: recall is undefined")
    hits = sum(1 for item in list(ranked)[:k] if item in truth)
    return hits / len(truth)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first (deterministic for the same input)."""
    n = scores.shape[1]
    k = min(k, n)
    # argpartition then a stable sort of the k survivors: O(n) per row instead of O(n log n).
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < n
        else np.tile(np.arange(n), (len(scores), 1))
    )
    part.sort(axis=1)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    result: np.ndarray = np.take_along_axis(part, order, axis=1)
    return result


def evaluate_ranking(
    score: Scores,
    truth: Mapping[int, Collection[int]],
    *,
    ks: Sequence[int] = (10, 20),
    exclude: sp.csr_matrix | None = None,
    batch: int = 512,
) -> dict[str, float]:
    """Mean NDCG@k and Recall@k over the users of ``truth``, ranking all items.

    ``score(user_indices)`` returns a (len(users), n_items) matrix; ``exclude`` (users x
    items, nonzero = seen) masks items that may not be recommended (MovieLens protocol).
    """
    users = np.array(sorted(u for u, items in truth.items() if items), dtype=np.int64)
    if len(users) == 0:
        raise ValueError("no user has a non-empty truth set")
    kmax = max(ks)
    disc = _discounts(kmax)
    sums = {f"ndcg@{k}": 0.0 for k in ks} | {f"recall@{k}": 0.0 for k in ks}
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = np.asarray(score(chunk), dtype=np.float64)
        if exclude is not None:
            seen = exclude[chunk]
            rows = np.repeat(np.arange(len(chunk)), np.diff(seen.indptr))
            scores[rows, seen.indices] = -np.inf
        ranked = top_k(scores, kmax)
        for row, user in enumerate(chunk):
            relevant = truth[int(user)]
            hits = np.fromiter(
                (i in relevant for i in ranked[row]), dtype=bool, count=len(ranked[row])
            )
            for k in ks:
                dcg = float(disc[:k][hits[:k]].sum())
                ideal = float(disc[: min(len(relevant), k)].sum())
                sums[f"ndcg@{k}"] += dcg / ideal
                sums[f"recall@{k}"] += float(hits[:k].sum()) / len(relevant)
    out = {name: total / len(users) for name, total in sums.items()}
    out["users"] = float(len(users))
    return out


def evaluate_next_item(
    score: Callable[[list[list[int]]], np.ndarray],
    sequences: Sequence[np.ndarray],
    *,
    k: int = 10,
    max_len: int = 10,
    batch: int = 512,
) -> dict[str, float]:
    """HR@k and MRR@k of next-item prediction at every step of held-out sessions.

    ``score(prefixes)`` gets each prefix (item indices, oldest first, at most ``max_len``)
    and returns (len(prefixes), n_items) scores of the next item.
    """
    prefixes: list[list[int]] = []
    targets: list[int] = []
    for seq in sequences:
        for t in range(1, len(seq)):
            prefixes.append([int(i) for i in seq[max(0, t - max_len) : t]])
            targets.append(int(seq[t]))
    if not prefixes:
        raise ValueError("no session with at least two products")
    hits = rr = 0.0
    for start in range(0, len(prefixes), batch):
        scores = np.asarray(score(prefixes[start : start + batch]), dtype=np.float64)
        ranked = top_k(scores, k)
        for row, target in enumerate(targets[start : start + batch]):
            found = np.flatnonzero(ranked[row] == target)
            if len(found):
                hits += 1.0
                rr += 1.0 / (int(found[0]) + 1)
    n = len(prefixes)
    return {f"hr@{k}": hits / n, f"mrr@{k}": rr / n, "predictions": float(n)}


__all__ = ["Scores", "evaluate_next_item", "evaluate_ranking", "ndcg_at_k", "recall_at_k", "top_k"]
