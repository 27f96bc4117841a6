"""One training trial of the collaborative model (BPR-MF), deterministic for a seed.

:func:`train` is a plain function of a config dict and the data, so a Ray Tune trainable can
wrap it (``on_epoch`` is where a trial reports per-epoch metrics). It returns the torch-free
:class:`~.predict.Recommender` and the final metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from cartwise.models.recommend.data import TrainData
from cartwise.models.recommend.metrics import evaluate_ranking
from cartwise.models.recommend.model import BPRMF, Reranker, bpr_loss, listwise_loss
from cartwise.models.recommend.predict import Recommender

DEFAULTS: dict[str, Any] = {
    "dim": 64,  # embedding size
    "epochs": 30,
    "lr": 0.005,  # Adam
    "reg": 1e-4,  # L2 on the embeddings each batch touches
    "batch_size": 1024,
    "negatives": 4,  # sampled negatives per positive
    "positives": "pairs",  # "pairs": each (customer, item) once; "lines": once per purchase line
    "init_std": 0.05,
    "seed": 0,
    "threads": 1,  # torch CPU threads; results are reproducible for a fixed count
    "repurchase_weight": 0.0,  # blend with the customer's own items (inf: own items first)
    "half_life_days": None,  # recency decay of the own-item weights (None: plain counts)
    "eval_every": 0,  # validate every n epochs (0: only at the end)
    "ks": (10, 20),
}

EpochCallback = Callable[[int, dict[str, float]], None]


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``config``; unknown keys are an error (catches typos)."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    merged = {**DEFAULTS, **config}
    for key in ("dim", "epochs", "batch_size", "negatives", "threads"):
        if int(merged[key]) <= 0:
            raise ValueError(f"{key} must be positive")
    if float(merged["lr"]) <= 0 or float(merged["reg"]) < 0:
        raise ValueError("lr must be positive and reg non-negative")
    return merged


def _validate(recommender: Recommender, data: TrainData, ks: tuple[int, ...]) -> dict[str, float]:
    if not data.valid:
        return {}
    result = evaluate_ranking(recommender.score_users, data.valid, ks=ks)
    return {f"val_{name}": value for name, value in result.items() if name != "users"}


def train(
    config: Mapping[str, Any],
    data: TrainData,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[Recommender, dict[str, float]]:
    """Train BPR-MF on ``data.train``; returns the predictor and its final metrics.

    Metrics: ``loss_first`` and ``loss`` (mean BPR loss of the first and last epoch),
    ``epochs``, ``seconds``, and ``val_ndcg@10`` etc. when ``data.valid`` is given.
    """
    cfg = resolve_config(config)
    started = time.perf_counter()
    seed = int(cfg["seed"])
    ks = tuple(int(k) for k in cfg["ks"])
    inter = data.train
    if cfg["positives"] == "lines":
        # Repeat purchases count again, so the items a customer keeps buying weigh more.
        users_np, items_np = inter.user.astype(np.int64), inter.item.astype(np.int64)
    elif cfg["positives"] == "pairs":
        pairs = inter.binary().tocoo()
        users_np, items_np = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    else:
        raise ValueError("positives must be 'pairs' or 'lines'")
    if len(users_np) == 0:
        raise ValueError("no training interactions")
    n_pairs, n_items = len(users_np), inter.n_items
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        model = BPRMF(inter.n_users, n_items, int(cfg["dim"]), float(cfg["init_std"]))
        optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
        users_t = torch.from_numpy(users_np)
        items_t = torch.from_numpy(items_np)
        batch, n_neg, reg = int(cfg["batch_size"]), int(cfg["negatives"]), float(cfg["reg"])
        history: list[float] = []
        epoch_metrics: dict[str, float] = {}

        def snapshot() -> Recommender:
            user_vectors, item_vectors, item_bias = model.export()
            return Recommender.build(
                inter,
                user_vectors,
                item_vectors,
                item_bias,
                repurchase_weight=float(cfg["repurchase_weight"]),
                half_life_days=cfg["half_life_days"],
                categories=data.categories,
                info={"config": {k: v for k, v in cfg.items() if k != "ks"}, "model": "bpr"},
            )

        for epoch in range(1, int(cfg["epochs"]) + 1):
            model.train()
            order = torch.from_numpy(rng.permutation(n_pairs))
            # Uniform negatives; a sampled "negative" the user did buy is rare here (a
            # customer buys a few % of the catalogue) and only adds a little noise.
            negatives = torch.from_numpy(rng.integers(0, n_items, size=(n_pairs, n_neg)))
            total = 0.0
            for start in range(0, n_pairs, batch):
                idx = order[start : start + batch]
                loss = bpr_loss(model, users_t[idx], items_t[idx], negatives[idx], reg)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / n_pairs)
            epoch_metrics = {"loss": history[-1]}
            every, last = int(cfg["eval_every"]), epoch == int(cfg["epochs"])
            if last or (every and epoch % every == 0):
                model.eval()
                recommender = snapshot()
                epoch_metrics |= _validate(recommender, data, ks)
            if on_epoch is not None:
                on_epoch(epoch, dict(epoch_metrics))
        metrics = {"loss_first": history[0], "epochs": float(len(history))} | epoch_metrics
        metrics["seconds"] = time.perf_counter() - started
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"training diverged: {metrics}")
        recommender.info["metrics"] = dict(metrics)
        recommender.info["loss_history"] = history
        return recommender, metrics
    finally:
        torch.set_num_threads(previous_threads)


RERANK_DEFAULTS: dict[str, Any] = {
    "hidden": (64, 32),
    "epochs": 15,
    "lr": 0.003,
    "weight_decay": 1e-5,
    "loss": "pointwise",  # binary cross-entropy; or "listwise" (softmax per customer)
    "groups_per_batch": 32,  # customers per step (listwise)
    "batch_size": 2048,  # rows per step (pointwise)
    "seed": 0,
    "threads": 1,
}


def train_reranker(
    config: Mapping[str, Any],
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Train the hybrid's re-ranker MLP; returns its numpy weights and the loss metrics.

    ``groups`` ties each row to its list (one customer in one label window).
    """
    unknown = set(config) - set(RERANK_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg = {**RERANK_DEFAULTS, **config}
    if not len(features) == len(labels) == len(groups) or len(features) == 0:
        raise ValueError("features, labels and groups must be non-empty and of equal length")
    seed = int(cfg["seed"])
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        model = Reranker(features.shape[1], tuple(int(h) for h in cfg["hidden"]))
        model.standardise(features)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        # Rows sorted by group, so a group's rows are one slice.
        order = np.argsort(groups, kind="stable")
        x_all = torch.from_numpy(np.ascontiguousarray(features[order], dtype=np.float32))
        y_all = torch.from_numpy(np.ascontiguousarray(labels[order], dtype=np.float32))
        _, dense = np.unique(groups[order], return_inverse=True)
        bounds = np.flatnonzero(np.r_[True, np.diff(dense) != 0, True])
        starts, sizes = bounds[:-1], np.diff(bounds)
        listwise = cfg["loss"] == "listwise"
        if cfg["loss"] not in ("listwise", "pointwise"):
            raise ValueError("loss must be 'listwise' or 'pointwise'")
        history: list[float] = []
        for epoch in range(1, int(cfg["epochs"]) + 1):
            model.train()
            total, steps = 0.0, 0
            if listwise:
                perm = rng.permutation(len(starts))
                per = int(cfg["groups_per_batch"])
                batches = [perm[i : i + per] for i in range(0, len(perm), per)]
            else:
                perm = rng.permutation(len(x_all))
                per = int(cfg["batch_size"])
                batches = [perm[i : i + per] for i in range(0, len(perm), per)]
            for chosen in batches:
                if listwise:
                    lengths = sizes[chosen]
                    rows = np.repeat(starts[chosen] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
                    rows = rows + np.arange(int(lengths.sum()))
                    group_ids = torch.from_numpy(np.repeat(np.arange(len(chosen)), lengths))
                    idx = torch.from_numpy(rows)
                    loss = listwise_loss(model(x_all[idx]), y_all[idx], group_ids)
                else:
                    idx = torch.from_numpy(chosen)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        model(x_all[idx]), y_all[idx]
                    )
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach())
                steps += 1
            history.append(total / max(steps, 1))
            if on_epoch is not None:
                on_epoch(epoch, {"loss": history[-1]})
        model.eval()
        metrics = {"loss_first": history[0], "loss": history[-1], "epochs": float(len(history))}
        return model.export(), metrics
    finally:
        torch.set_num_threads(previous_threads)


__all__ = [
    "DEFAULTS",
    "RERANK_DEFAULTS",
    "EpochCallback",
    "resolve_config",
    "train",
    "train_reranker",
]
