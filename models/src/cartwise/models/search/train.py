"""One training trial of the learned ranker, and the click lists it trains on.

:func:`build_lists` turns searches with clicks into padded candidate lists: for each search the
hybrid retriever's candidates (the same code serving runs), their features with the product
stats *as of the search* (a weekly ``search_rank_v1`` snapshot taken before it) and the query's
past clicks *minus the search's own* (leave-one-out), labelled 1 where clicked. :func:`train`
is a plain function of a config dict and those lists (a Ray Tune trainable wraps it), and is
deterministic for a seed: it returns the best epoch's numpy weights and the history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models.search.data import (
    catalog_from_source,
    product_stats,
    search_sessions,
    stats_matrix,
)
from cartwise.models.search.predict import FEATURES, SearchPredictor
from cartwise.models.source import Source

DEFAULTS: dict[str, Any] = {
    "hidden": 32,  # 0: a linear ranker
    "dropout": 0.0,
    "lr": 0.01,  # Adam
    "weight_decay": 1e-4,
    "epochs": 20,
    "batch_size": 256,  # lists per step
    "seed": 0,
    "threads": 1,  # torch CPU threads (results are reproducible for a fixed count)
}
K = 10
HOLDOUT_DAYS = 14

EpochCallback = Callable[[int, dict[str, float], dict[str, Any]], None]


@dataclass
class RankLists:
    """Padded candidate lists: features (S, C, F), labels (S, C), mask (S, C), times (S,)."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    ts: np.ndarray  # datetime64[us] of each search

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, rows: np.ndarray) -> RankLists:
        """The lists at ``rows``."""
        return RankLists(self.x[rows], self.y[rows], self.mask[rows], self.ts[rows])

    def split(self, valid_share: float) -> tuple[RankLists, RankLists]:
        """The earlier lists for training, the last ``valid_share`` (by time) for validation."""
        order = np.argsort(self.ts, kind="stable")
        cut = round(len(order) * (1 - valid_share))
        return self.take(order[:cut]), self.take(order[cut:])


def click_counts(predictor: SearchPredictor, sessions: pd.DataFrame) -> dict[str, dict[int, float]]:
    """corrected query → {product index: clicks} over ``sessions`` (unknown products skipped)."""
    counts: dict[str, dict[int, float]] = {}
    for query, clicked in zip(sessions["query"], sessions["clicked"], strict=True):
        if not clicked:
            continue
        key = predictor.speller.correct(str(query))
        bucket = counts.setdefault(key, {})
        for pid in clicked:
            i = predictor.index_of(int(pid))
            if i is not None:
                bucket[i] = bucket.get(i, 0.0) + 1.0
    return counts


def build_lists(
    predictor: SearchPredictor,
    sessions: pd.DataFrame,
    *,
    stats: Sequence[np.ndarray] | None = None,
    snapshot: np.ndarray | None = None,
    relevant: Sequence[Sequence[int]] | None = None,
    leave_one_out: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> RankLists:
    """Candidate lists for searches (``query``, ``ts``, ``clicked``), labelled by clicks.

    ``stats[snapshot[s]]`` is search ``s``'s (n_products, 7) stats matrix (default: the
    predictor's own); ``relevant`` overrides the clicked ids as labels (generated queries).
    """
    queries = [str(q) for q in sessions["query"]]
    labels = relevant if relevant is not None else list(sessions["clicked"])
    corrected = [predictor.speller.correct(q) for q in queries]
    unique = list(dict.fromkeys(corrected))
    vectors = predictor.embed(unique)
    cache = {q: predictor.candidates(q, vectors[i]) for i, q in enumerate(unique)}
    width = max((len(idx) for idx, _ in cache.values()), default=1)
    n = len(queries)
    x = np.zeros((n, width, len(FEATURES)), dtype=np.float32)
    y = np.zeros((n, width), dtype=np.float32)
    mask = np.zeros((n, width), dtype=bool)
    for s, (query, clicks) in enumerate(zip(corrected, labels, strict=True)):
        index, base = cache[query]
        positive = {i for i in (predictor.index_of(int(p)) for p in clicks) if i is not None}
        own: dict[int, float] = {}
        if leave_one_out and relevant is None:
            for i in positive:
                own[i] = own.get(i, 0.0) + 1.0
        matrix = None if stats is None or snapshot is None else stats[int(snapshot[s])]
        feats = predictor.features(index, base, query, stats=matrix, exclude_clicks=own)
        c = len(index)
        x[s, :c] = feats
        y[s, :c] = [1.0 if int(i) in positive else 0.0 for i in index]
        mask[s, :c] = True
        if progress and s % 2000 == 0:
            progress(s, n)
    ts = pd.to_datetime(sessions["ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
    return RankLists(x, y, mask, ts)


def mrr_ndcg(scores: np.ndarray, lists: RankLists, k: int = K) -> dict[str, float]:
    """MRR@k and NDCG@k of per-candidate ``scores`` (S, C) on labelled lists."""
    s = np.where(lists.mask, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(lists.y, order, axis=1) > 0
    hits &= np.take_along_axis(lists.mask, order, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    rr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    gains = (hits / np.log2(ranks + 1)).sum(axis=1)
    n_pos = np.minimum((lists.y > 0).sum(axis=1), k)
    ideal = np.array([(1.0 / np.log2(np.arange(2, m + 2))).sum() for m in n_pos])
    ndcg = np.where(ideal > 0, gains / np.where(ideal > 0, ideal, 1.0), 0.0)
    return {
        "mrr_at_10": float(rr.mean()) if len(rr) else 0.0,
        "ndcg_at_10": float(ndcg.mean()) if len(ndcg) else 0.0,
    }


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``config``; unknown keys are an error (catches typos)."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    merged = {**DEFAULTS, **config}
    for key in ("epochs", "batch_size", "threads"):
        if int(merged[key]) <= 0:
            raise ValueError(f"{key} must be positive")
    if int(merged["hidden"]) < 0 or float(merged["lr"]) <= 0:
        raise ValueError("hidden must be >= 0 and lr positive")
    return merged


def train(
    config: Mapping[str, Any],
    train_lists: RankLists,
    valid_lists: RankLists | None = None,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit the ranker listwise; the best validation epoch's weights (numpy) and the history.

    The weights dict holds the MLP layers plus ``mean``/``std``, the feature standardisation.
    History: ``loss`` per epoch, ``val`` metrics per epoch, ``base`` (the unranked hybrid's
    validation metrics, the rrf order) and ``best_epoch``.
    """
    import torch

    from cartwise.models.search.model import Ranker, export, listwise_loss

    cfg = resolve_config(config)
    if len(train_lists) == 0:
        raise ValueError("no training lists (no searches with clicks in the window)")
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        rows = train_lists.x[train_lists.mask].astype(np.float64)
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        xt = torch.from_numpy(((train_lists.x - mean) / std).astype(np.float32))
        xt = xt * torch.from_numpy(train_lists.mask[..., None].astype(np.float32))
        yt = torch.from_numpy(train_lists.y)
        mt = torch.from_numpy(train_lists.mask)
        model = Ranker(xt.shape[-1], int(cfg["hidden"]), float(cfg["dropout"]))
        opt = torch.optim.Adam(
            model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        check = valid_lists if valid_lists is not None and len(valid_lists) else train_lists
        xv = torch.from_numpy(((check.x - mean) / std).astype(np.float32))
        rrf = FEATURES.index("rrf")
        history: dict[str, Any] = {
            "loss": [],
            "val": [],
            "base": mrr_ndcg(check.x[:, :, rrf], check),
        }
        best: tuple[float, int, dict[str, np.ndarray]] | None = None
        batch = int(cfg["batch_size"])
        for epoch in range(int(cfg["epochs"])):
            model.train()
            order = rng.permutation(len(train_lists))
            total = 0.0
            for start in range(0, len(order), batch):
                take = torch.from_numpy(order[start : start + batch])
                opt.zero_grad()
                loss = listwise_loss(model(xt[take]), yt[take], mt[take])
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += float(loss.item()) * len(take)
            model.eval()
            with torch.no_grad():
                scores = model(xv).numpy()
            metrics = mrr_ndcg(scores, check)
            epoch_loss = total / len(order)
            history["loss"].append(epoch_loss)
            history["val"].append(metrics)
            weights = {**export(model), "mean": mean, "std": std}
            if best is None or metrics["mrr_at_10"] > best[0] + 1e-12:
                best = (metrics["mrr_at_10"], epoch, weights)
            if on_epoch is not None:
                on_epoch(epoch, {"train_loss": epoch_loss, **metrics}, weights)
    finally:
        torch.set_num_threads(threads)
    assert best is not None
    history["best_epoch"] = best[1]
    history["best"] = history["val"][best[1]]
    if not all(math.isfinite(v) for v in history["loss"]):
        raise FloatingPointError("ranker loss diverged")
    return best[2], history


@dataclass
class Prepared:
    """An unranked predictor over the training window and the click lists to rank with."""

    predictor: SearchPredictor
    lists: RankLists
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive: the holdout starts here
    sessions: int
    seconds: dict[str, float]

    @property
    def window(self) -> str:
        """``YYYY-MM-DD/YYYY-MM-DD`` of the training data (last day inclusive)."""
        last = self.end - pd.Timedelta(days=1)
        return f"{self.start.date()}/{last.date()}"


Progress = Callable[[str, int, int], None]


def holdout_window(source: Source, days: int = HOLDOUT_DAYS) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The last ``days`` days of events: (start, end), UTC midnights, ``end`` exclusive."""
    stamps = source.facts("events", columns=["received_at"])["received_at"]
    if stamps.empty:
        raise ValueError("no events: search needs search and click events to train on")
    last = pd.to_datetime(stamps, utc=True).max().floor("D")
    end = last + pd.Timedelta(days=1)
    return end - pd.Timedelta(days=days), end


def prepare(
    source: Source,
    *,
    end: pd.Timestamp | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> Prepared:
    """Catalog, MiniLM vectors, ``search_rank_v1`` snapshots and click lists before ``end``.

    ``end`` defaults to the start of the holdout window. The returned predictor already has
    the BM25 index, vectors, speller, autocomplete and the window's query clicks; only the
    ranker weights are missing (see :func:`train`, :func:`attach`).
    """
    import time

    from cartwise.models.text import encode

    def step(stage: str, done: int, total: int = 5) -> None:
        if progress:
            progress(stage, done, total)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if end is None:
        end, _ = holdout_window(source)
    end = pd.Timestamp(end)
    end = end.tz_convert("UTC") if end.tzinfo else end.tz_localize("UTC")
    step("reading the catalog and searches", 0)
    catalog = catalog_from_source(source)
    sessions = search_sessions(source, end=end)
    if sessions.empty:
        raise ValueError(f"no searches before {end.date()}: nothing to train the ranker on")
    start = pd.Timestamp(sessions["ts"].min()).floor("D")
    seconds["read"] = time.perf_counter() - started

    step("encoding the catalog with MiniLM", 1)
    t0 = time.perf_counter()
    vectors = encode(catalog.texts())
    seconds["encode_catalog"] = time.perf_counter() - t0

    step("product stats from search_rank_v1", 2)
    t0 = time.perf_counter()
    times = [*list(pd.date_range(start, end, freq="7D", inclusive="left")), end]
    frame = product_stats(source, catalog.product_ids, times)
    snaps = [stats_matrix(frame[frame["event_timestamp"] == t], catalog.product_ids) for t in times]
    stamps = np.array([t.tz_localize(None) for t in times], dtype="datetime64[us]")
    seen = pd.to_datetime(sessions["ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
    snapshot = np.maximum(np.searchsorted(stamps, seen, side="right") - 1, 0)
    seconds["stats"] = time.perf_counter() - t0

    step("building the index, speller and autocomplete", 3)
    t0 = time.perf_counter()
    predictor = SearchPredictor.build(
        catalog, vectors, snaps[-1], queries=sessions["query"].tolist(), config=config
    )
    predictor.query_clicks = click_counts(predictor, sessions)
    seconds["build"] = time.perf_counter() - t0

    step("candidate lists from clicks", 4)
    t0 = time.perf_counter()
    has_clicks = (sessions["clicked"].str.len() > 0).to_numpy()
    lists = build_lists(
        predictor,
        sessions[has_clicks].reset_index(drop=True),
        stats=snaps,
        snapshot=snapshot[has_clicks],
    )
    seconds["lists"] = time.perf_counter() - t0
    step("prepared", 5)
    predictor.info.update(
        {
            "window": f"{start.date()}/{(end - pd.Timedelta(days=1)).date()}",
            "searches": len(sessions),
            "lists": len(lists),
        }
    )
    return Prepared(predictor, lists, start, end, len(sessions), seconds)


def attach(predictor: SearchPredictor, weights: Mapping[str, np.ndarray]) -> SearchPredictor:
    """Give ``predictor`` the trained ranker (layers, feature mean and std) in place."""
    layers = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items() if k[0] in "wb"}
    predictor.ranker = layers
    predictor.feature_mean = np.asarray(weights["mean"], dtype=np.float64)
    predictor.feature_std = np.asarray(weights["std"], dtype=np.float64)
    return predictor


__all__ = [
    "DEFAULTS",
    "HOLDOUT_DAYS",
    "Prepared",
    "RankLists",
    "attach",
    "build_lists",
    "click_counts",
    "holdout_window",
    "mrr_ndcg",
    "prepare",
    "resolve_config",
    "train",
]
