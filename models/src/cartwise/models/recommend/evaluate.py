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

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
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
from cartwise.models.recommend.data import (
    EVENT_COLUMNS,
    Interactions,
    TrainData,
    encode,
    from_online_retail,
    sessions_from_events,
    split,
    subsample_users,
    targets,
    window,
)
from cartwise.models.recommend.metrics import evaluate_ranking
from cartwise.models.recommend.train import (
    TowerData,
    tower_data,
    train,
    train_reranker,
    train_two_tower,
)

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


def tower_inputs(
    data: Interactions,
    *,
    content: Mapping[Any, np.ndarray] | None = None,
    valid: dict[int, set[int]] | None = None,
    content_dims: int = 32,
) -> TowerData:
    """Two-tower data from interactions alone: the re-ranker's customer and item statistics
    (:func:`.hybrid.context`) as features, plus MiniLM vectors by item id when given."""
    ctx = hybrid.context(data)
    vectors = None
    if content:
        width = len(next(iter(content.values())))
        blank = np.zeros(width, dtype=np.float32)
        vectors = np.vstack([content.get(i, blank) for i in data.item_ids.tolist()])
    return tower_data(
        data,
        user_inputs=ctx.users.astype(np.float32),
        item_features=ctx.items.astype(np.float32),
        content=vectors,
        content_dims=content_dims,
        valid=valid,
    )


def encode_texts(
    texts: Mapping[Any, str], *, cache_dir: Path | None = None
) -> dict[Any, np.ndarray]:
    """MiniLM vectors of item texts (item id → text), by item id; cached by a text digest."""
    ids = list(texts)
    strings = [texts[i] for i in ids]
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256("\n".join(map(str, [*ids, *strings])).encode()).hexdigest()
        path = Path(cache_dir) / f"minilm-{digest[:16]}.npy"
        if path.is_file():
            return dict(zip(ids, np.load(path), strict=True))
    from cartwise.models import text

    vectors = text.encode(strings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return dict(zip(ids, vectors, strict=True))


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
    tower: Mapping[str, Any] | None = None,
    content: Mapping[Any, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Run the protocol (see the module docstring) and return every model's row.

    With ``tower`` (a two-tower config; ``{}`` for the defaults) the two-tower model gets a row
    ("two-tower + repurchase": epochs and blend weight chosen on validation, features from the
    interactions, ``content`` MiniLM vectors by item id if given) and feeds the re-ranker as a
    third candidate and feature source ("hybrid (re-ranker + two-tower)").
    """
    grids = {**GRIDS, **(grids or {})}
    bpr_cfg = {**BPR_CONFIG, **(bpr or {})}
    cut = pd.Timestamp(cutoff)
    valid_cut = cut - pd.Timedelta(days=valid_days)
    with_tower = tower is not None
    steps = _Steps(progress, 9 + (windows + 1 if with_hybrid else 0) + (2 if with_tower else 0))
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

    tower_cfg: dict[str, Any] = {}
    tt_sub = tt_full = None
    if with_tower:
        started = time.perf_counter()
        tower_cfg = {"half_life_days": half_life, **(tower or {})}
        tt_sub, tt_fit = train_two_tower(
            tower_cfg, tower_inputs(sub, content=content, valid=vtruth)
        )
        steps("two-tower (validation)")
        # Refit on everything before the cut-off with the validated epochs and blend weight.
        tower_cfg |= {
            "epochs": int(tt_fit["best_epoch"]),
            "repurchase_weights": (tt_fit["repurchase_weight"],),
        }
        tt_full, _ = train_two_tower(
            {**tower_cfg, "eval_every": 0}, tower_inputs(full, content=content)
        )
        tt_full.repurchase_weight = float(tt_fit["repurchase_weight"])
        valid = {k.removeprefix("val_"): v for k, v in tt_fit.items() if k.startswith("val_")}
        params = {
            "epochs": tower_cfg["epochs"],
            "weight": tt_fit["repurchase_weight"],
            "content": content is not None,
        }
        add("two-tower + repurchase", "model", tt_full.score_users, valid, params, started)
        steps("two-tower")

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
        # Two variants when the two-tower runs: the re-ranker over EASE + BPR (as without it)
        # and the same with the two-tower as a third candidate and feature source.
        variants = ["base", "tower"] if with_tower else ["base"]
        collected: dict[str, tuple[list[Any], list[Any], list[Any]]] = {
            v: ([], [], []) for v in variants
        }
        for k in range(windows):
            # Window 0 is the validation window: reuse the models already fitted on ``sub``.
            w_end = cut - pd.Timedelta(days=valid_days * k)
            w_cut = w_end - pd.Timedelta(days=valid_days)
            tower_score: Callable[[np.ndarray], np.ndarray] | None = None
            scorers: dict[str, Callable[[np.ndarray], np.ndarray]]
            if k == 0:
                data, truth = sub, vtruth
                scorers = {"ease": ease_sub.score, "bpr": bpr_sub.collaborative_scores}
                if tt_sub is not None:
                    tower_score = tt_sub.collaborative_scores
            else:
                data, truth = split(window(purchases, None, w_end), w_cut, w_end)
                if not truth:
                    break
                e = EASE(float(lam)).fit(data)
                b, _ = train(bpr_cfg, TrainData(data))
                scorers = {"ease": e.score, "bpr": b.collaborative_scores}
                if with_tower:
                    t, _ = train_two_tower(
                        {**tower_cfg, "eval_every": 0}, tower_inputs(data, content=content)
                    )
                    tower_score = t.collaborative_scores
            ctx = hybrid.context(data)
            for variant in variants:
                chosen = dict(scorers)
                if variant == "tower" and tower_score is not None:
                    chosen["tower"] = tower_score
                cands = hybrid.build(ctx, np.array(sorted(truth)), chosen)
                feats, labs, grps = collected[variant]
                feats.append(cands.features)
                labs.append(hybrid.labels(cands, truth))
                # One list per customer per window: offset the user index by the window.
                grps.append(cands.user + k * 10_000_000)
            steps(f"hybrid window {k + 1}")
        full_ctx = hybrid.context(full)
        for variant in variants:
            feats, labs, grps = collected[variant]
            weights, fit = train_reranker(
                rerank_cfg, np.vstack(feats), np.concatenate(labs), np.concatenate(grps)
            )
            final: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "ease": ease_full.score,
                "bpr": bpr_full.collaborative_scores,
            }
            if variant == "tower" and tt_full is not None:
                final["tower"] = tt_full.collaborative_scores
            model = hybrid.Hybrid(full_ctx, final, weights, ease_rep.score)
            params = {"windows": len(feats), "rows": int(sum(len(f) for f in feats))}
            params |= {"loss_first": round(fit["loss_first"], 4), "loss": round(fit["loss"], 4)}
            name = "hybrid (re-ranker + two-tower)" if variant == "tower" else "hybrid (re-ranker)"
            add(name, "model", model.score, {}, params, started)
            started = time.perf_counter()
        steps("hybrid")
    return Report(rows, info)


def holdout(source: Any, *, settings: Any = None) -> Any:
    """The gate's evaluator: NDCG@10 and Recall@20 on the held-out last window of purchases.

    The truth is what customers known to the loaded predictor bought in the window (products it
    cannot rank count as misses); scoring is the predictor's full ranking. When the predictor
    has a session model, its next-item HR@10 on the window's sessions is reported too.
    """
    from cartwise.models import areas
    from cartwise.models.recommend import dataset
    from cartwise.models.recommend.data import read_source
    from cartwise.models.recommend.metrics import evaluate_next_item
    from cartwise.models.recommend.tune import HOLDOUT_DAYS, VALID_DAYS

    purchases = read_source(source)
    split = dataset.windows(purchases, holdout_days=HOLDOUT_DAYS, valid_days=VALID_DAYS)
    test = window(purchases, split.holdout, split.end)
    events = source.facts("events", columns=list(EVENT_COLUMNS), start=split.holdout, end=split.end)

    def evaluate_loaded(loaded: Any) -> dict[str, float]:
        predictor = loaded.predictor
        truth = holdout_truth(predictor, test)
        if not truth:
            raise ValueError("no held-out purchases by customers the model knows")
        result = evaluate_ranking(predictor.score_users, truth, ks=KS)
        out = {
            "ndcg_at_10": result["ndcg@10"],
            "ndcg_at_20": result["ndcg@20"],
            "recall_at_10": result["recall@10"],
            "recall_at_20": result["recall@20"],
            "users": result["users"],
        }
        session_model = getattr(predictor, "session_model", None)
        if session_model is not None:
            index = {p: i for i, p in enumerate(predictor.item_ids.tolist())}
            held = sessions_from_events(events, index)
            vocabulary = session_model.n_items
            sequences = [s for s in held.sequences if int(s.max()) < vocabulary][:2000]
            if sequences:
                scored = evaluate_next_item(session_model.scores, sequences)
                out |= {"session_hr_at_10": scored["hr@10"], "session_mrr_at_10": scored["mrr@10"]}
        return out

    return areas.Holdout(evaluate=evaluate_loaded, window=split.holdout_window)


def holdout_truth(predictor: Any, test: pd.DataFrame) -> dict[int, set[int]]:
    """User index → item indices bought in ``test``, in the predictor's index space.

    Customers the predictor does not know are left out; products it does not know get negative
    indices (no model can rank them, but they still count as relevant).
    """
    truth: dict[int, set[int]] = {}
    unknown: dict[Any, int] = {}
    for user, item in zip(test["user"].tolist(), test["item"].tolist(), strict=True):
        u = predictor.user_index(user)
        if u is None:
            continue
        i = predictor.item_index(item)
        if i is None:
            i = unknown.setdefault(item, -1 - len(unknown))
        truth.setdefault(u, set()).add(i)
    return truth


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
    tower: Mapping[str, Any] | None = None,
    content: Mapping[Any, np.ndarray] | None = None,
) -> Report:
    """The issue's Online Retail protocol: train ≤ 2011-09-30, test 2011-10-01 … 2011-12-09.

    ``quick`` keeps a fifth of the customers, smaller grids, fewer BPR epochs and two
    hybrid windows (minutes → tens of seconds). ``tower``/``content``: see
    :func:`temporal_protocol` (the two-tower rows; off by default).
    """
    extra: dict[str, Any] = {"progress": progress, "content": content}
    if tower is not None:
        extra["tower"] = {"seed": seed, **({"epochs": 6} if quick else {}), **tower}
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
            **extra,
        )
    return temporal_protocol(
        purchases,
        cutoff="2011-10-01",
        end="2011-12-10",
        bpr={"seed": seed},
        rerank={"seed": seed},
        **extra,
    )


def online_retail_texts(cleaned: pd.DataFrame) -> dict[Any, str]:
    """StockCode → its most frequent description, from the importer's cleaned frame."""
    named = cleaned[cleaned["description"].fillna("").astype(str) != ""]
    counts = named.groupby(["code", "description"]).size().reset_index(name="n")
    counts = counts.sort_values(["code", "n", "description"], ascending=[True, False, True])
    best = counts.drop_duplicates("code")
    return {str(c): str(d) for c, d in zip(best["code"], best["description"], strict=True)}


# ---------------------------------------------------------------------- MovieLens 100K

RECBOLE_VERSION = "1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ML_BPR: dict[str, Any] = {"dim": 64, "epochs": 40, "lr": 0.005, "reg": 1e-4, "negatives": 4}
ML_TOWER: dict[str, Any] = {"dim": 64, "epochs": 30, "lr": 0.003, "id_dropout": 0.0}


def movielens_path(cache_dir: Path | str) -> Path:
    """``ml-100k.inter``, read from a cached recbole wheel (downloaded once with pip if none)."""
    import subprocess
    import sys
    import zipfile

    cache = Path(cache_dir)
    target = cache / "ml-100k.inter"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("recbole-*.whl"))
    if not wheels:
        subprocess.run(  # noqa: S603 - fixed arguments: pip from this interpreter, from PyPI
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                f"recbole=={RECBOLE_VERSION}",
                "-d",
                str(cache),
            ],
            check=True,
            capture_output=True,
        )
        wheels = sorted(cache.glob("recbole-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no recbole wheel under {cache}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        target.write_bytes(wheel.read(ML100K_MEMBER))
    return target


def read_movielens(path: Path | str, *, min_rating: float = 4.0) -> pd.DataFrame:
    """Positive ratings (``rating >= min_rating``) of a RecBole ``.inter`` file as purchases."""
    frame = pd.read_csv(path, sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(frame.columns)
    if missing:
        raise ValueError(f"not a MovieLens .inter file: lacks {sorted(missing)}")
    positive = frame[frame["rating"] >= min_rating].reset_index(drop=True)
    return pd.DataFrame(
        {
            "user": positive["user_id"].astype(np.int64),
            "item": positive["item_id"].astype(np.int64),
            "ts": pd.to_datetime(positive["timestamp"], unit="s"),
            "quantity": 1,
            "order": positive.index.astype(str),
        }
    )


def random_split(
    purchases: pd.DataFrame, *, seed: int = 0, shares: tuple[float, float] = (0.8, 0.1)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per user, a random 80/10/10 split of the interactions (train, validation, test)."""
    rng = np.random.default_rng(seed)
    shuffled = purchases.iloc[rng.permutation(len(purchases))]
    position = shuffled.groupby("user").cumcount().to_numpy()
    size = shuffled.groupby("user")["user"].transform("size").to_numpy()
    train_end = np.floor(size * shares[0]).astype(int)
    valid_end = np.floor(size * (shares[0] + shares[1])).astype(int)
    parts = (position < train_end, (position >= train_end) & (position < valid_end))
    test = position >= valid_end
    return shuffled[parts[0]], shuffled[parts[1]], shuffled[test]


def movielens(
    path: Path | str,
    *,
    seed: int = 0,
    quick: bool = False,
    bpr: Mapping[str, Any] | None = None,
    tower: Mapping[str, Any] | None = None,
    grids: Mapping[str, list[Any]] | None = None,
    progress: Progress | None = None,
) -> Report:
    """MovieLens 100K: ratings ≥ 4, random 80/10/10 per user, full ranking, seen items excluded.

    Hyper-parameters are chosen on validation (train items excluded); test excludes train and
    validation items. Models: popularity, item-kNN, EASE, BPR-MF, two-tower (ids only: the
    ``.inter`` file has no features or titles).
    """
    grids = {**(QUICK_GRIDS if quick else GRIDS), **(grids or {})}
    bpr_cfg = {**ML_BPR, "seed": seed, **({"epochs": 15} if quick else {}), **(bpr or {})}
    tower_cfg = {**ML_TOWER, "seed": seed, **({"epochs": 10} if quick else {}), **(tower or {})}
    steps = _Steps(progress, 6)
    steps("reading MovieLens 100K")
    purchases = read_movielens(path)
    train_part, valid_part, test_part = random_split(purchases, seed=seed)
    data = encode(train_part, items=purchases["item"].unique().tolist())
    vtruth = targets(valid_part, data, known_items_only=True)
    ttruth = targets(test_part, data, known_items_only=True)
    seen_valid = data.binary()
    seen_test = seen_valid + encode_like(valid_part, data)
    rows: list[Row] = []

    def run(name: str, kind: str, scorer: Any, params: dict[str, Any], started: float) -> None:
        score = scorer.score if hasattr(scorer, "score") else scorer
        valid = evaluate_ranking(score, vtruth, ks=KS, exclude=seen_valid)
        test = evaluate_ranking(score, ttruth, ks=KS, exclude=seen_test)
        rows.append(Row(name, kind, test, valid, params, time.perf_counter() - started))

    def pick(make: Callable[[Any], Scorer], grid: Sequence[Any]) -> tuple[Any, Scorer]:
        best: tuple[float, Any, Scorer] | None = None
        for value in grid:
            scorer = make(value).fit(data)
            got = evaluate_ranking(scorer.score, vtruth, ks=KS, exclude=seen_valid)[PRIMARY]
            if best is None or got > best[0]:
                best = (got, value, scorer)
        assert best is not None
        return best[1], best[2]

    started = time.perf_counter()
    run("popularity", "baseline", Popularity().fit(data), {}, started)
    steps("popularity")
    started = time.perf_counter()
    k, knn = pick(lambda v: ItemKNN(int(v)), grids["itemknn"])
    run("item-kNN", "baseline", knn, {"neighbours": k}, started)
    steps("item-kNN")
    started = time.perf_counter()
    lam, ease = pick(lambda v: EASE(float(v)), grids["ease"])
    run("EASE", "baseline", ease, {"lambda": lam}, started)
    steps("EASE")
    started = time.perf_counter()
    bpr_rec, _ = train(bpr_cfg, TrainData(data))
    run("BPR-MF", "model", bpr_rec.collaborative_scores, dict(bpr_cfg), started)
    steps("BPR-MF")
    started = time.perf_counter()
    # Validation picks the epoch; its truth must not see the training items (excluded above).
    tt, fit = train_two_tower(
        {**tower_cfg, "repurchase_weights": (0.0,)},
        tower_inputs(data, valid=_without_seen(vtruth, seen_valid)),
    )
    params = {k: tower_cfg[k] for k in ("dim", "lr", "id_dropout")} | {
        "best_epoch": int(fit["best_epoch"])
    }
    run("two-tower", "model", tt.collaborative_scores, params, started)
    steps("two-tower")
    info = {
        "users": data.n_users,
        "items": data.n_items,
        "train_pairs": int(seen_valid.nnz),
        "valid_users": len(vtruth),
        "test_users": len(ttruth),
        "positives": len(purchases),
    }
    return Report(rows, info)


def encode_like(part: pd.DataFrame, data: Interactions) -> Any:
    """users x items (binary) of ``part`` in ``data``'s index space (unknown ids dropped)."""
    import scipy.sparse as sp  # type: ignore[import-untyped]

    users, items = data.user_index(), data.item_index()
    pairs = [
        (users[u], items[i])
        for u, i in zip(part["user"].tolist(), part["item"].tolist(), strict=True)
        if u in users and i in items
    ]
    rows = np.array([p[0] for p in pairs], dtype=np.int64)
    cols = np.array([p[1] for p in pairs], dtype=np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(pairs), np.float32), (rows, cols)), shape=(data.n_users, data.n_items)
    )
    matrix.data[:] = 1.0
    return matrix


def _without_seen(truth: Mapping[int, set[int]], seen: Any) -> dict[int, set[int]]:
    out = {}
    for u, items in truth.items():
        rest = items - set(seen[u].indices.tolist())
        if rest:
            out[u] = rest
    return out


# ---------------------------------------------------------------------- quality bench

GOAL_RATIO = 1.05


def _section_rows(report: Report) -> list[Any]:
    from cartwise.models.report import Row as ReportRow

    def note(params: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed")[:160]

    return [
        ReportRow(
            model=r.model,
            metrics={
                "ndcg_at_10": r.test["ndcg@10"],
                "recall_at_20": r.test["recall@20"],
                "valid_ndcg_at_10": r.valid.get("ndcg@10", math.nan),
            },
            baseline=r.kind == "baseline",
            note=note(r.params),
            seconds=r.seconds,
        )
        for r in report.rows
    ]


def _cleaned(data: Any) -> pd.DataFrame:
    frame: pd.DataFrame = data.online_retail_cleaned()
    return frame


def benchmark_online_retail(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> Any:
    """The Online Retail section: baselines, BPR, two-tower and the hybrids, same run."""
    from cartwise.models.report import Section

    cleaned = _cleaned(data)
    purchases = from_online_retail(cleaned)
    if progress:
        progress("recommend: MiniLM vectors of the product descriptions", 0, 1)
    content = encode_texts(online_retail_texts(cleaned), cache_dir=Path(data.cache) / "recommend")
    report = online_retail(
        purchases, quick=quick, seed=seed, progress=progress, tower={}, content=content
    )
    subject = "hybrid (re-ranker)"
    rows = _section_rows(report)
    section = Section(
        key="recommend-online-retail",
        title="Recommendations, Online Retail"
        + (" (quick: 20% of customers)" if quick else "")
        + f": train before {report.info['cutoff']}, test {report.info['cutoff']} … "
        f"{report.info['last_test_day']}",
        protocol=(
            "Purchases of known customers (UCI Online Retail). Train before 2011-10-01, test "
            "2011-10-01 … 2011-12-09: the truth is what customers seen in training bought in "
            "the test window; full ranking over every product, nothing excluded (re-buying "
            "counts). Every hyper-parameter (EASE λ, item-kNN k, repurchase half-life and "
            "blend weight, the two-tower's epochs and blend weight) is chosen on the last 28 "
            "days before the cut-off, never on test. The re-ranker learns from label windows "
            "inside the training period. The two-tower's features come from the interactions "
            "(customer and item statistics) plus MiniLM vectors of the product descriptions."
        ),
        metrics=["ndcg_at_10", "recall_at_20", "valid_ndcg_at_10"],
        primary="ndcg_at_10",
        higher_is_better=True,
        rows=rows,
        subject=subject,
        goal=f"hybrid NDCG@10 ≥ {GOAL_RATIO} x the best baseline",
        data=(
            f"UCI Online Retail (CC BY 4.0): {report.info['train_users']} customers, "
            f"{report.info['items']} products, {report.info['train_lines']} training lines; "
            f"{report.info['test_users']} test customers, "
            f"{report.info['test_pairs_repurchase']:.0%} of test pairs are re-purchases."
        ),
        model_name="recommend",
    )
    ratio = section.ratio(section.row(subject))
    section.goal_met = bool(ratio >= GOAL_RATIO)
    tower_row = section.row("two-tower + repurchase")
    plus = section.row("hybrid (re-ranker + two-tower)")
    best = section.best_baseline()
    section.notes.append(
        f"{subject}: {ratio:.3f}x the best baseline ({best.model if best else '—'}); with the "
        f"two-tower as a third candidate/feature source: {section.ratio(plus):.3f}x; the "
        f"two-tower + repurchase alone: {section.ratio(tower_row):.3f}x."
    )
    section.limits += [
        "One split in time (one test period); no confidence intervals.",
        "The registered model (tune.run) is the two-tower + repurchase blend (plus the "
        "session GRU), trained on Feast features; the re-ranker hybrid is not registered yet.",
    ]
    return section


def benchmark_movielens(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> Any:
    """The MovieLens 100K section (ml-100k from the recbole wheel, cached under the bench)."""
    from cartwise.models.report import Section

    path = movielens_path(Path(data.cache) / "recbole")
    report = movielens(path, quick=quick, seed=seed, progress=progress)
    section = Section(
        key="recommend-movielens",
        title="Recommendations, MovieLens 100K" + (" (quick)" if quick else ""),
        protocol=(
            "Ratings ≥ 4 are positives; per user a random 80/10/10 split (train / validation / "
            "test, seeded). Full ranking over all items with the user's training (and, for "
            "test, validation) items excluded. Hyper-parameters chosen on validation."
        ),
        metrics=["ndcg_at_10", "recall_at_20", "valid_ndcg_at_10"],
        primary="ndcg_at_10",
        higher_is_better=True,
        rows=_section_rows(report),
        subject="two-tower",
        goal=f"the best of our models' NDCG@10 ≥ {GOAL_RATIO} x the best baseline",
        goal_met=None,
        data=(
            f"MovieLens 100K (GroupLens; from the RecBole {RECBOLE_VERSION} wheel): "
            f"{report.info['users']} users, {report.info['items']} items, "
            f"{report.info['positives']} positive ratings."
        ),
        model_name="recommend",
    )
    section.limits.append(
        "The two-tower has only ids here (the .inter file has no user or item features), "
        "so it is a softmax matrix factorisation; EASE is known to be strong on this set."
    )
    ours = [r for r in section.rows if not r.baseline]
    best = section.best_baseline()
    if ours and best is not None:
        section.goal_met = max(section.ratio(r) for r in ours) >= GOAL_RATIO
    return section


def session_benchmark(
    sessions_train: Sequence[np.ndarray],
    sessions_test: Sequence[np.ndarray],
    n_items: int,
    *,
    config: Mapping[str, Any] | None = None,
    max_test: int = 5000,
) -> Report:
    """Next-item HR@10 / MRR@10 of the session GRU against transitions and popularity."""
    from cartwise.models.recommend.baselines import SessionTransitions
    from cartwise.models.recommend.metrics import evaluate_next_item
    from cartwise.models.recommend.train import train_session

    test = list(sessions_test)[:max_test]
    rows = []
    started = time.perf_counter()
    counts = np.bincount(np.concatenate(list(sessions_train)), minlength=n_items).astype(float)
    pop = evaluate_next_item(lambda p: np.tile(counts, (len(p), 1)), test)
    rows.append(Row("popularity", "baseline", pop, {}, {}, time.perf_counter() - started))
    started = time.perf_counter()
    base = SessionTransitions().fit(list(sessions_train), n_items)
    rows.append(
        Row(
            "last-item transitions",
            "baseline",
            evaluate_next_item(base.scores, test),
            {},
            {"window": base.window},
            time.perf_counter() - started,
        )
    )
    started = time.perf_counter()
    cfg = dict(config or {})
    model, fit = train_session(cfg, sessions_train, n_items)
    params = {k: model.info["config"][k] for k in ("dim", "hidden", "epochs")}
    params |= {"loss": round(fit["loss"], 3)}
    gru = evaluate_next_item(model.scores, test)
    rows.append(Row("session GRU", "model", gru, {}, params, time.perf_counter() - started))
    info = {"train_sessions": len(sessions_train), "test_sessions": len(test)}
    return Report(rows, info)


def benchmark_sessions(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> Any:
    """The session section on a generated shop (no public session data ships here)."""
    from cartwise.models.recommend import dataset
    from cartwise.models.report import Row as ReportRow
    from cartwise.models.report import Section

    source = data.synth_source()
    products = source.dimension("products", columns=["product_id"])
    ids = sorted(set(products["product_id"].astype(np.int64).tolist()))
    index = {p: i for i, p in enumerate(ids)}
    every = dataset.sessions(source, index)
    last = pd.Timestamp(every.started.max()).normalize()
    cut = last - pd.Timedelta(days=14)
    train_part, test_part = every.window(None, cut), every.window(cut, None)
    if progress:
        progress("recommend: session GRU", 0, 1)
    report = session_benchmark(
        train_part.sequences,
        test_part.sequences,
        len(ids),
        config={"epochs": 2 if quick else 6, "seed": seed},
    )
    rows = [
        ReportRow(
            model=r.model,
            metrics={"hr_at_10": r.test["hr@10"], "mrr_at_10": r.test["mrr@10"]},
            baseline=r.kind == "baseline",
            note=", ".join(f"{k}={v}" for k, v in r.params.items()),
            seconds=r.seconds,
        )
        for r in report.rows
    ]
    section = Section(
        key="recommend-session",
        title="Session next-item recommendations, generated shop",
        protocol=(
            "Sessions of the events facts (view, click, add_to_cart products in order, repeats "
            "in a row merged). Train on sessions before the last 14 days; on up to 5,000 later "
            "sessions predict every next product from the products before it (at most 10)."
        ),
        metrics=["hr_at_10", "mrr_at_10"],
        primary="hr_at_10",
        higher_is_better=True,
        rows=rows,
        subject="session GRU",
        goal="session GRU HR@10 ≥ the last-item transitions baseline",
        data=(
            f"cartwise data synth defaults: {report.info['train_sessions']} training and "
            f"{report.info['test_sessions']} test sessions."
        ),
        model_name="recommend",
    )
    section.goal_met = bool(
        section.row("session GRU").metrics["hr_at_10"]
        >= section.row("last-item transitions").metrics["hr_at_10"]
    )
    section.limits.append(
        "Generated sessions browse one category at a time, so the last item's neighbours "
        "carry most of the signal; real clickstreams would be the honest test."
    )
    return section


def benchmark(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> list[Any]:
    """Every recommend section for ``bench/quality.py``: Online Retail, MovieLens, sessions."""
    return [
        benchmark_online_retail(data, quick=quick, seed=seed, progress=progress),
        benchmark_movielens(data, quick=quick, seed=seed, progress=progress),
        benchmark_sessions(data, quick=quick, seed=seed, progress=progress),
    ]


__all__ = [
    "BPR_CONFIG",
    "GRIDS",
    "PRIMARY",
    "QUICK_GRIDS",
    "Report",
    "Row",
    "benchmark",
    "benchmark_movielens",
    "benchmark_online_retail",
    "benchmark_sessions",
    "encode_texts",
    "evaluate",
    "holdout",
    "holdout_truth",
    "movielens",
    "movielens_path",
    "online_retail",
    "online_retail_texts",
    "random_split",
    "read_movielens",
    "session_benchmark",
    "temporal_protocol",
    "tune",
]
