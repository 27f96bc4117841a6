"""The time-split protocol: baselines tuned on a validation window, then every model on test.

:func:`temporal_protocol` on any purchases frame (see :mod:`.data`):

1. **Validation.** Train on purchases before ``cutoff - valid_days``; the truth is what the
   customers seen then bought in the last ``valid_days`` before ``cutoff``. Every baseline's
   hyper-parameter (EASE's λ, item-kNN's k, the repurchase half-life, the blend weight) and
   the BPR + repurchase blend weight are chosen here, on NDCG@10.
2. **Test.** Refit on everything before ``cutoff`` with the chosen values; the truth is what
   customers seen in training bought in ``[cutoff, end)``. Full ranking over all items;
   nothing is excluded (re-buying is allowed and common in retail).
3. **Hybrid.** The re-ranker of :mod:`.hybrid` learns from ``windows`` label windows of
   ``valid_days`` each, ending at ``cutoff`` (features from the data before each window), and
   then ranks the test customers from features at ``cutoff``. Its settings were chosen on the
   validation window during development, never on test.

:func:`online_retail` fixes the dates of the issue's protocol (train up to 2011-09-30, test
2011-10-01 … 2011-12-09).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.recommend import hybrid
from cartwise.models.recommend.baselines import (
    EASE,
    ItemKNN,
    Popularity,
    Repurchase,
    RepurchaseBlend,
    Scorer,
)
from cartwise.models.recommend.data import Interactions, TrainData, split, subsample_users, window
from cartwise.models.recommend.metrics import evaluate_ranking
from cartwise.models.recommend.train import train, train_reranker

Progress = Callable[[str, int, int], None]
PRIMARY = "ndcg@10"
KS = (10, 20)

# BPR settings chosen on the Online Retail validation window (2011-09-03 … 09-30): 128
# dimensions, one positive per purchase line (repeat buys weigh more), stronger L2.
BPR_CONFIG: dict[str, Any] = {
    "dim": 128,
    "epochs": 8,
    "lr": 0.005,
    "reg": 3e-3,
    "negatives": 4,
    "positives": "lines",
    "seed": 0,
}
GRIDS: dict[str, list[Any]] = {
    "itemknn": [50, 100, 200, 400],
    "ease": [50, 100, 200, 500, 1000, 2000],
    "half_life": [None, 365.0, 180.0, 90.0, 30.0],
    "weight": [0.5, 1.0, 2.0, 4.0, math.inf],
}
QUICK_GRIDS: dict[str, list[Any]] = {
    "itemknn": [100],
    "ease": [100, 500],
    "half_life": [None, 180.0],
    "weight": [1.0, 2.0, math.inf],
}


@dataclass
class Row:
    """One model's result: test metrics, the chosen parameters and their validation score."""

    model: str
    kind: str  # "baseline" or "model"
    test: dict[str, float]
    valid: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Report:
    """All rows of a protocol run and what the data looked like."""

    rows: list[Row]
    info: dict[str, Any]

    def best_baseline(self, metric: str = PRIMARY) -> Row:
        """The baseline with the highest test ``metric``."""
        baselines = [r for r in self.rows if r.kind == "baseline"]
        if not baselines:
            raise ValueError("no baseline in the report")
        return max(baselines, key=lambda r: r.test[metric])

    def ratio(self, row: Row, metric: str = PRIMARY) -> float:
        """``row``'s test ``metric`` over the best baseline's."""
        best = self.best_baseline(metric).test[metric]
        return row.test[metric] / best if best > 0 else math.nan

    def row(self, model: str) -> Row:
        """The row of a model by name."""
        for r in self.rows:
            if r.model == model:
                return r
        raise KeyError(model)


def evaluate(
    scorer: Scorer | Callable[[np.ndarray], np.ndarray], truth: Mapping[int, set[int]]
) -> dict[str, float]:
    """NDCG@10/20 and Recall@10/20 of a scorer (or a score function) on a truth dict."""
    score: Callable[[np.ndarray], np.ndarray] = (
        scorer.score if hasattr(scorer, "score") else scorer  # type: ignore[assignment]
    )
    return evaluate_ranking(score, truth, ks=KS)


def tune(
    make: Callable[[Any], Scorer],
    grid: Sequence[Any],
    data: Interactions,
    truth: Mapping[int, set[int]],
) -> tuple[Any, dict[str, float], Scorer]:
    """The grid value whose fitted scorer scores best on ``truth`` (NDCG@10; first on ties)."""
    best: tuple[Any, dict[str, float], Scorer] | None = None
    for value in grid:
        scorer = make(value).fit(data)
        result = evaluate(scorer, truth)
        if best is None or result[PRIMARY] > best[1][PRIMARY]:
            best = (value, result, scorer)
    if best is None:
        raise ValueError("empty grid")
    return best


class _Steps:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, stage: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(stage, min(self.done, self.total), self.total)


def temporal_protocol(
    purchases: pd.DataFrame,
    *,
    cutoff: str | pd.Timestamp,
    end: str | pd.Timestamp | None = None,
    valid_days: int = 28,
    windows: int = 4,
    bpr: Mapping[str, Any] | None = None,
    grids: Mapping[str, list[Any]] | None = None,
    rerank: Mapping[str, Any] | None = None,
    with_hybrid: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Run the protocol (see the module docstring) and return every model's row."""
    grids = {**GRIDS, **(grids or {})}
    bpr_cfg = {**BPR_CONFIG, **(bpr or {})}
    cut = pd.Timestamp(cutoff)
    valid_cut = cut - pd.Timedelta(days=valid_days)
    steps = _Steps(progress, 9 + (windows + 1 if with_hybrid else 0))
    rows: list[Row] = []

    steps("splitting")
    sub, vtruth = split(window(purchases, None, cut), valid_cut, cut)
    full, ttruth = split(purchases, cut, end)
    if not vtruth or not ttruth:
        raise ValueError("the validation or test window has no purchases by known customers")

    def add(
        name: str,
        kind: str,
        scorer: Scorer | Callable[[np.ndarray], np.ndarray],
        valid: dict[str, float],
        params: dict[str, Any],
        started: float,
    ) -> None:
        test = evaluate(scorer, ttruth)
        rows.append(Row(name, kind, test, valid, params, time.perf_counter() - started))

    started = time.perf_counter()
    valid = evaluate(Popularity().fit(sub), vtruth)
    add("popularity", "baseline", Popularity().fit(full), valid, {}, started)
    steps("popularity")

    started = time.perf_counter()
    k, valid, _ = tune(lambda v: ItemKNN(int(v)), grids["itemknn"], sub, vtruth)
    add("item-kNN", "baseline", ItemKNN(int(k)).fit(full), valid, {"neighbours": k}, started)
    steps("item-kNN")

    started = time.perf_counter()
    lam, valid, ease_sub = tune(lambda v: EASE(float(v)), grids["ease"], sub, vtruth)
    ease_full = EASE(float(lam)).fit(full)
    add("EASE", "baseline", ease_full, valid, {"lambda": lam}, started)
    steps("EASE")

    started = time.perf_counter()
    half_life, valid, _ = tune(Repurchase, grids["half_life"], sub, vtruth)
    add(
        "repurchase",
        "baseline",
        Repurchase(half_life).fit(full),
        valid,
        {"half_life_days": half_life},
        started,
    )
    steps("repurchase")

    started = time.perf_counter()
    weight, valid, _ = tune(
        lambda w: RepurchaseBlend(ease_sub, weight=w, half_life_days=half_life, fitted=True),
        grids["weight"],
        sub,
        vtruth,
    )
    ease_rep = RepurchaseBlend(ease_full, weight=weight, half_life_days=half_life, fitted=True).fit(
        full
    )
    params = {"lambda": lam, "half_life_days": half_life, "weight": weight}
    add("EASE + repurchase", "baseline", ease_rep, valid, params, started)
    steps("EASE + repurchase")

    started = time.perf_counter()
    bpr_sub, bpr_valid = train(bpr_cfg, TrainData(sub, vtruth))
    steps("BPR (validation)")
    bpr_full, _ = train(bpr_cfg, TrainData(full))
    valid = {k.removeprefix("val_"): v for k, v in bpr_valid.items() if k.startswith("val_")}
    add(
        "BPR-MF",
        "model",
        bpr_full.score_users,
        valid,
        {k: bpr_cfg[k] for k in sorted(bpr_cfg)},
        started,
    )
    steps("BPR-MF")

    started = time.perf_counter()
    best_w, best_valid = 0.0, valid
    own_sub = sub.decayed(half_life).astype(np.float32)
    for w in grids["weight"]:
        candidate = replace(bpr_sub, own=own_sub, repurchase_weight=w)
        result = evaluate(candidate.score_users, vtruth)
        if result[PRIMARY] > best_valid[PRIMARY]:
            best_w, best_valid = w, result
    blend_full = replace(
        bpr_full, own=full.decayed(half_life).astype(np.float32), repurchase_weight=best_w
    )
    add(
        "BPR-MF + repurchase",
        "model",
        blend_full.score_users,
        best_valid,
        {"weight": best_w, "half_life_days": half_life},
        started,
    )
    steps("BPR-MF + repurchase")

    info: dict[str, Any] = {
        "cutoff": str(cut.date()),
        "end": None if end is None else str(pd.Timestamp(end).date()),
        "last_test_day": str(
            (pd.Timestamp(end) - pd.Timedelta(days=1)).date()
            if end is not None
            else max(purchases["ts"]).date()
        ),
        "valid_from": str(valid_cut.date()),
        "train_users": full.n_users,
        "items": full.n_items,
        "train_lines": len(full.user),
        "test_users": len(ttruth),
        "test_pairs": int(sum(len(v) for v in ttruth.values())),
        "test_pairs_unknown_item": int(sum(1 for v in ttruth.values() for i in v if i < 0)),
        "test_pairs_repurchase": _repurchase_share(full, ttruth),
        "valid_users": len(vtruth),
        "bpr": bpr_cfg,
    }

    if with_hybrid:
        started = time.perf_counter()
        rerank_cfg = dict(rerank or {})
        features, labels, groups = [], [], []
        for k in range(windows):
            # Window 0 is the validation window: reuse the models already fitted on ``sub``.
            w_end = cut - pd.Timedelta(days=valid_days * k)
            w_cut = w_end - pd.Timedelta(days=valid_days)
            if k == 0:
                data, truth, scorers = (
                    sub,
                    vtruth,
                    {"ease": ease_sub.score, "bpr": bpr_sub.collaborative_scores},
                )
            else:
                data, truth = split(window(purchases, None, w_end), w_cut, w_end)
                if not truth:
                    break
                e = EASE(float(lam)).fit(data)
                b, _ = train(bpr_cfg, TrainData(data))
                scorers = {"ease": e.score, "bpr": b.collaborative_scores}
            cands = hybrid.build(hybrid.context(data), np.array(sorted(truth)), scorers)
            features.append(cands.features)
            labels.append(hybrid.labels(cands, truth))
            # One list per customer per window: offset the user index by the window.
            groups.append(cands.user + k * 10_000_000)
            steps(f"hybrid window {k + 1}")
        weights, fit = train_reranker(
            rerank_cfg, np.vstack(features), np.concatenate(labels), np.concatenate(groups)
        )
        model = hybrid.Hybrid(
            hybrid.context(full),
            {"ease": ease_full.score, "bpr": bpr_full.collaborative_scores},
            weights,
            ease_rep.score,
        )
        params = {"windows": len(features), "rows": int(sum(len(f) for f in features))}
        params |= {"loss_first": round(fit["loss_first"], 4), "loss": round(fit["loss"], 4)}
        add("hybrid (re-ranker)", "model", model.score, {}, params, started)
        steps("hybrid")
    return Report(rows, info)


def _repurchase_share(data: Interactions, truth: Mapping[int, set[int]]) -> float:
    bought = data.binary()
    total = hits = 0
    for u, items in truth.items():
        row = set(bought[u].indices.tolist())
        hits += sum(1 for i in items if i in row)
        total += len(items)
    return hits / total if total else math.nan


def online_retail(
    purchases: pd.DataFrame,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> Report:
    """The issue's Online Retail protocol: train ≤ 2011-09-30, test 2011-10-01 … 2011-12-09.

    ``quick`` keeps a fifth of the customers, smaller grids, fewer BPR epochs and two
    hybrid windows (minutes → tens of seconds).
    """
    if quick:
        purchases = subsample_users(purchases, 0.2, seed)
        return temporal_protocol(
            purchases,
            cutoff="2011-10-01",
            end="2011-12-10",
            windows=2,
            bpr={"epochs": 4, "dim": 64, "seed": seed},
            grids=QUICK_GRIDS,
            rerank={"epochs": 8, "seed": seed},
            progress=progress,
        )
    return temporal_protocol(
        purchases,
        cutoff="2011-10-01",
        end="2011-12-10",
        bpr={"seed": seed},
        rerank={"seed": seed},
        progress=progress,
    )


__all__ = [
    "BPR_CONFIG",
    "GRIDS",
    "PRIMARY",
    "QUICK_GRIDS",
    "Report",
    "Row",
    "evaluate",
    "online_retail",
    "temporal_protocol",
    "tune",
]
