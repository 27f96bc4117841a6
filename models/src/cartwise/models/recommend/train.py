"""One training trial of each model (BPR-MF, two-tower, session GRU, re-ranker), deterministic.

:func:`train` (BPR-MF), :func:`train_two_tower` and :func:`train_session` are plain functions
of a config dict and the data, so a Ray Tune trainable can wrap them (``on_epoch`` is where a
trial reports per-epoch metrics). They return torch-free predictors (numpy weights) and their
metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from cartwise.models.recommend.data import Interactions, TrainData
from cartwise.models.recommend.features import FeatureSpec
from cartwise.models.recommend.metrics import evaluate_ranking
from cartwise.models.recommend.model import (
    BPRMF,
    Reranker,
    SessionGRU,
    TwoTower,
    bpr_loss,
    listwise_loss,
)
from cartwise.models.recommend.predict import Recommender, SessionModel, Towers

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


def positives(inter: Any, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The (customer, item) training positives: each pair once, or once per purchase line."""
    if mode == "lines":
        # Repeat purchases count again, so the items a customer keeps buying weigh more.
        users, items = inter.user.astype(np.int64), inter.item.astype(np.int64)
    elif mode == "pairs":
        pairs = inter.binary().tocoo()
        users, items = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    else:
        raise ValueError("positives must be 'pairs' or 'lines'")
    if len(users) == 0:
        raise ValueError("no training interactions")
    return users, items


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
    users_np, items_np = positives(inter, str(cfg["positives"]))
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


# ---------------------------------------------------------------------- two-tower

TOWER_DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "hidden": (128,),
    "epochs": 15,
    "lr": 0.003,
    "weight_decay": 1e-5,  # AdamW
    "batch_size": 512,
    "id_dropout": 0.25,  # share of ids replaced by "unknown" per step: trains cold start
    "positives": "pairs",  # or "lines"
    "init_std": 0.05,
    "half_life_days": None,  # recency decay of the own-item weights of the repurchase blend
    "repurchase_weights": (0.0, 1.0, 2.0, math.inf),  # chosen on validation
    "seed": 0,
    "threads": 1,
    "eval_every": 1,  # validate every n epochs (0: only at the end)
    "ks": (10, 20),
}


@dataclass
class TowerData:
    """What a two-tower trial needs: interactions, tower inputs per user and item, validation."""

    train: Interactions
    user_inputs: np.ndarray  # (n_users, user width) float32
    item_inputs: np.ndarray  # (n_items, item width + content dims) float32
    valid: dict[int, set[int]] | None = None
    categories: dict[Any, str] | None = None
    towers: Towers | None = None  # spec and content projection (weights filled by training)
    content: np.ndarray | None = None  # (n_items, 384) MiniLM vectors, kept for the predictor


def content_projection(content: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, basis): a PCA of the MiniLM vectors to ``dims`` columns (fewer tower weights)."""
    mean = content.mean(axis=0)
    dims = max(0, min(dims, content.shape[0] - 1, content.shape[1]))
    if dims == 0:
        return mean.astype(np.float32), np.zeros((content.shape[1], 0), dtype=np.float32)
    _, _, vt = np.linalg.svd(content - mean, full_matrices=False)
    return mean.astype(np.float32), np.ascontiguousarray(vt[:dims].T, dtype=np.float32)


def tower_data(
    train_data: Interactions,
    *,
    user_inputs: np.ndarray | None = None,
    item_features: np.ndarray | None = None,
    content: np.ndarray | None = None,
    content_dims: int = 32,
    spec: FeatureSpec | None = None,
    valid: dict[int, set[int]] | None = None,
    categories: dict[Any, str] | None = None,
) -> TowerData:
    """Assemble :class:`TowerData`; missing feature blocks become one constant column."""
    n_users, n_items = train_data.n_users, train_data.n_items
    users = np.ones((n_users, 1), np.float32) if user_inputs is None else user_inputs
    items = np.ones((n_items, 1), np.float32) if item_features is None else item_features
    if users.shape[0] != n_users or items.shape[0] != n_items:
        raise ValueError("feature rows must match the interactions' users and items")
    towers = Towers(weights={}, spec=spec)
    if content is not None:
        if content.shape[0] != n_items:
            raise ValueError("content needs one row per item")
        mean, basis = content_projection(content, content_dims)
        towers = Towers(weights={}, spec=spec, content_mean=mean, content_basis=basis)
        items = np.hstack([items, towers.project(content)])
    return TowerData(
        train=train_data,
        user_inputs=np.ascontiguousarray(users, dtype=np.float32),
        item_inputs=np.ascontiguousarray(items, dtype=np.float32),
        valid=valid,
        categories=categories,
        towers=towers,
        content=None if content is None else np.asarray(content, dtype=np.float32),
    )


def _choose_weight(
    recommender: Recommender, valid: dict[int, set[int]], weights: tuple[float, ...], ks: Any
) -> tuple[float, dict[str, float]]:
    best: tuple[float, dict[str, float]] | None = None
    for weight in weights:
        recommender.repurchase_weight = float(weight)
        result = evaluate_ranking(recommender.score_users, valid, ks=ks)
        if best is None or result["ndcg@10"] > best[1]["ndcg@10"]:
            best = (float(weight), result)
    assert best is not None
    recommender.repurchase_weight = best[0]
    return best


def train_two_tower(
    config: Mapping[str, Any],
    data: TowerData,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[Recommender, dict[str, float]]:
    """Train the two-tower model with a full softmax over the catalogue; deterministic.

    Returns the predictor of the best validated epoch (the last one without validation) and
    metrics: ``loss_first``, ``loss``, ``epochs``, ``best_epoch``, ``val_ndcg@10`` ...,
    ``repurchase_weight`` (chosen on validation).
    """
    unknown = set(config) - set(TOWER_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg = {**TOWER_DEFAULTS, **config}
    for key in ("dim", "epochs", "batch_size", "threads"):
        if int(cfg[key]) <= 0:
            raise ValueError(f"{key} must be positive")
    if not 0 <= float(cfg["id_dropout"]) < 1 or float(cfg["lr"]) <= 0:
        raise ValueError("id_dropout must be in [0, 1) and lr positive")
    started = time.perf_counter()
    seed, ks = int(cfg["seed"]), tuple(int(k) for k in cfg["ks"])
    inter = data.train
    users_np, items_np = positives(inter, str(cfg["positives"]))
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        model = TwoTower(
            inter.n_users,
            inter.n_items,
            data.user_inputs.shape[1],
            data.item_inputs.shape[1],
            dim=int(cfg["dim"]),
            hidden=tuple(int(h) for h in cfg["hidden"]),
            init_std=float(cfg["init_std"]),
        )
        model.standardise(data.user_inputs, data.item_inputs)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        user_x = torch.from_numpy(data.user_inputs)
        item_x = torch.from_numpy(data.item_inputs)
        item_ids = torch.arange(1, inter.n_items + 1)
        users_t, items_t = torch.from_numpy(users_np), torch.from_numpy(items_np)
        batch, drop = int(cfg["batch_size"]), float(cfg["id_dropout"])
        history: list[float] = []
        best: tuple[float, Recommender, dict[str, float], int] | None = None
        template = data.towers or Towers(weights={})

        def snapshot() -> Recommender:
            towers = replace(template, weights=model.export())
            all_users = towers.users(np.arange(1, inter.n_users + 1), data.user_inputs)
            all_items = towers.items(np.arange(1, inter.n_items + 1), data.item_inputs)
            return replace(
                Recommender.build(
                    inter,
                    all_users,
                    all_items,
                    half_life_days=cfg["half_life_days"],
                    categories=data.categories,
                    info={
                        "config": {k: v for k, v in cfg.items() if k != "ks"},
                        "model": "two-tower",
                    },
                ),
                towers=towers,
                item_content=data.content,
            )

        for epoch in range(1, int(cfg["epochs"]) + 1):
            model.train()
            order = torch.from_numpy(rng.permutation(len(users_np)))
            total = 0.0
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                u = users_t[idx]
                u_ids = torch.where(
                    torch.from_numpy(rng.random(len(idx)) < drop), torch.zeros_like(u), u + 1
                )
                i_ids = torch.where(
                    torch.from_numpy(rng.random(inter.n_items) < drop),
                    torch.zeros_like(item_ids),
                    item_ids,
                )
                logits = model.users(u_ids, user_x[u]) @ model.items(i_ids, item_x).T
                loss = torch.nn.functional.cross_entropy(logits, items_t[idx])
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / len(order))
            epoch_metrics: dict[str, float] = {"loss": history[-1]}
            every, last = int(cfg["eval_every"]), epoch == int(cfg["epochs"])
            if last or (every and epoch % every == 0):
                model.eval()
                recommender = snapshot()
                if data.valid:
                    weight, result = _choose_weight(
                        recommender, data.valid, tuple(cfg["repurchase_weights"]), ks
                    )
                    epoch_metrics |= {f"val_{k}": v for k, v in result.items() if k != "users"} | {
                        "repurchase_weight": weight
                    }
                    score = result["ndcg@10"]
                else:
                    recommender.repurchase_weight = float(
                        cfg["repurchase_weights"][-1]
                        if len(cfg["repurchase_weights"]) == 1
                        else 0.0
                    )
                    score = float(epoch)  # no validation: the last epoch wins
                if best is None or score > best[0]:
                    best = (score, recommender, dict(epoch_metrics), epoch)
            if on_epoch is not None:
                on_epoch(epoch, dict(epoch_metrics))
        assert best is not None
        _, recommender, best_metrics, best_epoch = best
        metrics = {"loss_first": history[0], "epochs": float(len(history))} | best_metrics
        metrics |= {"loss": history[-1], "best_epoch": float(best_epoch)}
        metrics["seconds"] = time.perf_counter() - started
        if not all(math.isfinite(v) for v in metrics.values() if v != math.inf):
            raise FloatingPointError(f"training diverged: {metrics}")
        recommender.info["metrics"] = dict(metrics)
        recommender.info["loss_history"] = history
        return recommender, metrics
    finally:
        torch.set_num_threads(previous_threads)


# ---------------------------------------------------------------------- session model

SESSION_DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "hidden": 64,
    "epochs": 4,
    "lr": 0.005,
    "batch_size": 256,
    "max_len": 10,  # the last products a session keeps (session_v1 keeps 10)
    "seed": 0,
    "threads": 1,
}


def train_session(
    config: Mapping[str, Any],
    sequences: Sequence[np.ndarray],
    n_items: int,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[SessionModel, dict[str, float]]:
    """Train the session GRU on item-index sequences (oldest first): next-item softmax."""
    unknown = set(config) - set(SESSION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg = {**SESSION_DEFAULTS, **config}
    usable = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    if not usable:
        raise ValueError("no session with at least two products")
    length = int(cfg["max_len"])
    # Long sessions become overlapping windows of max_len + 1 products.
    windows: list[np.ndarray] = []
    for seq in usable:
        for end in range(len(seq), 1, -length):
            windows.append(seq[max(0, end - length - 1) : end])
    tokens = np.zeros((len(windows), length + 1), dtype=np.int64)
    for r, seq in enumerate(windows):
        tokens[r, : len(seq)] = seq + 1
    started = time.perf_counter()
    seed = int(cfg["seed"])
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        model = SessionGRU(n_items, int(cfg["dim"]), int(cfg["hidden"]))
        optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
        x_all = torch.from_numpy(tokens)
        history: list[float] = []
        batch = int(cfg["batch_size"])
        for epoch in range(1, int(cfg["epochs"]) + 1):
            model.train()
            order = torch.from_numpy(rng.permutation(len(tokens)))
            total, count = 0.0, 0
            for start in range(0, len(order), batch):
                chunk = x_all[order[start : start + batch]]
                logits = model(chunk[:, :-1])
                target = chunk[:, 1:]
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, n_items + 1), target.reshape(-1), ignore_index=0
                )
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                n = int((target > 0).sum())
                total += float(loss.detach()) * n
                count += n
            history.append(total / max(count, 1))
            if on_epoch is not None:
                on_epoch(epoch, {"loss": history[-1]})
        model.eval()
        metrics = {
            "loss_first": history[0],
            "loss": history[-1],
            "epochs": float(len(history)),
            "sessions": float(len(usable)),
            "seconds": time.perf_counter() - started,
        }
        return SessionModel(model.export(), info={"config": cfg, "metrics": metrics}), metrics
    finally:
        torch.set_num_threads(previous_threads)


__all__ = [
    "DEFAULTS",
    "RERANK_DEFAULTS",
    "SESSION_DEFAULTS",
    "TOWER_DEFAULTS",
    "EpochCallback",
    "TowerData",
    "content_projection",
    "resolve_config",
    "tower_data",
    "train",
    "train_reranker",
    "train_session",
    "train_two_tower",
]
