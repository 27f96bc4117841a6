"""One training trial: classifier MLP + autoencoder, stacked and thresholded on validation.

:func:`train` is a plain function of a config dict and a :class:`TrainSet`, deterministic for a
seed; a Ray Tune trainable wraps it (``on_epoch`` reports each epoch). Each epoch trains the
classifier one pass (class-weighted BCE) and the autoencoder one pass over the legitimate
training rows, then fits the stacker on the validation rows and keeps the best epoch by the
stack's out-of-fold validation PR-AUC (early stopping by selection).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cartwise.models.fraud.calibrate import (
    fit_logistic,
    review_threshold,
    sigmoid,
    stack_inputs,
    threshold_for_precision,
)
from cartwise.models.fraud.metrics import brier, pr_auc
from cartwise.models.fraud.model import AutoEncoder, Classifier, export
from cartwise.models.fraud.predict import FraudScorer, Preprocessor

DEFAULTS: dict[str, Any] = {
    "hidden": (64, 32),
    "dropout": 0.1,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "epochs": 30,
    # Fraud rows weigh this many legit rows in the loss; the stacker re-calibrates afterwards.
    "pos_weight": 5.0,
    "bins": 8,  # piecewise-linear encoding bins per feature (the classifier's extra inputs)
    "clip": 5.0,  # the classifier's standardised inputs are clipped to ±clip
    "ae_hidden": 16,
    "ae_bottleneck": 3,
    "ae_lr": 3e-3,
    "stack_l2": 1e-3,
    "stack_on": "rank",  # the stacker's anomaly input: "log_error" or "rank"
    "review_precision": 0.5,
    "block_precision": 0.9,
    "min_flagged": 3,
    # When no threshold reaches review_precision on validation, review this share of orders
    # (the riskiest) instead of none: a review desk's capacity. Blocking still needs precision.
    "review_rate": 0.02,
    "seed": 0,
    "threads": 1,
}

EpochCallback = Callable[[int, dict[str, float], FraudScorer | None], None]


@dataclass
class TrainSet:
    """Training and validation rows (raw feature values) with their labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    features: tuple[str, ...]
    log_features: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``config``; unknown keys are an error (catches typos)."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    merged = {**DEFAULTS, **config}
    for key in ("epochs", "batch_size", "ae_hidden", "ae_bottleneck", "threads"):
        if int(merged[key]) <= 0:
            raise ValueError(f"{key} must be positive")
    if float(merged["lr"]) <= 0 or float(merged["ae_lr"]) <= 0 or float(merged["pos_weight"]) <= 0:
        raise ValueError("lr, ae_lr and pos_weight must be positive")
    if not 0 < float(merged["review_precision"]) <= float(merged["block_precision"]) <= 1:
        raise ValueError("need 0 < review_precision <= block_precision <= 1")
    if not 0 <= float(merged["review_rate"]) < 1:
        raise ValueError("review_rate must be in [0, 1)")
    return merged


def _cross_fit_risk(inputs: np.ndarray, y: np.ndarray, l2: float, seed: int) -> np.ndarray:
    """Out-of-fold stacked risk on the validation rows (2 folds, stratified)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for label in (0.0, 1.0):
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)[: len(idx) // 2]] = 1
    out = np.zeros(len(y))
    for k in (0, 1):
        fit_rows, held = fold != k, fold == k
        if len(np.unique(y[fit_rows])) < 2:
            return np.full(len(y), math.nan)
        coef, intercept = fit_logistic(inputs[fit_rows], y[fit_rows], l2=l2)
        out[held] = sigmoid(inputs[held] @ coef + intercept)
    return out


def build_scorer(
    cfg: Mapping[str, Any],
    data: TrainSet,
    prep: Preprocessor,
    classifier: Classifier,
    autoencoder: AutoEncoder,
) -> tuple[FraudScorer, dict[str, float]]:
    """Export the networks, fit the stacker and thresholds on validation; with val metrics."""
    classifier.eval()
    autoencoder.eval()
    clf_layers, ae_layers = export(classifier), export(autoencoder)
    y_train = data.y_train
    legit_train = data.x_train[y_train == 0]
    probe = FraudScorer(
        prep=prep,
        classifier=clf_layers,
        autoencoder=ae_layers,
        stack_coef=np.array([1.0, 0.0]),
        stack_intercept=0.0,
        thresholds={"review": math.inf, "block": math.inf},
        error_quantiles=np.zeros(2),
        baseline=np.median(legit_train, axis=0) if len(legit_train) else prep.mean,
        non_negative=tuple(data.non_negative),
        stack_on=str(cfg["stack_on"]),
    )
    _, train_errors, _ = probe._parts(legit_train)
    probe.error_quantiles = np.quantile(train_errors, np.linspace(0, 1, 201))
    logit, error, _ = probe._parts(data.x_valid)
    y = data.y_valid
    inputs = stack_inputs(logit, probe._stack_anomaly(error))
    metrics: dict[str, float] = {
        "val_pr_auc_classifier": pr_auc(y, logit),
        "val_pr_auc_autoencoder": pr_auc(y, error),
    }
    if len(np.unique(y)) < 2:
        # No fraud in validation: keep the classifier alone, uncalibrated, and never block;
        # review the riskiest review_rate share (the capacity rule; no precision to aim at).
        probe.stack_coef = np.array([1.0, 0.0])
        review, rule = review_threshold(
            np.zeros(len(y)), sigmoid(logit), 1.0, rate=float(cfg["review_rate"])
        )
        probe.thresholds = {"review": review, "block": math.inf}
        probe.info["review_rule"] = rule
        metrics["val_pr_auc"] = math.nan
        return probe, metrics
    l2 = float(cfg["stack_l2"])
    metrics["val_pr_auc"] = pr_auc(y, _cross_fit_risk(inputs, y, l2, int(cfg["seed"])))
    coef, intercept = fit_logistic(inputs, y, l2=l2)
    probe.stack_coef, probe.stack_intercept = coef, intercept
    risk = sigmoid(inputs @ coef + intercept)
    block = threshold_for_precision(
        y, risk, float(cfg["block_precision"]), min_flagged=int(cfg["min_flagged"])
    )
    review, rule = review_threshold(
        y,
        risk,
        float(cfg["review_precision"]),
        min_flagged=int(cfg["min_flagged"]),
        rate=float(cfg["review_rate"]),
    )
    probe.thresholds = {"review": min(review, block), "block": block}
    probe.info["review_rule"] = rule
    metrics["val_brier"] = brier(y, risk)
    metrics["val_brier_uncalibrated"] = brier(y, sigmoid(logit))
    return probe, metrics


def train(
    config: Mapping[str, Any],
    data: TrainSet,
    *,
    on_epoch: EpochCallback | None = None,
) -> tuple[FraudScorer, dict[str, float]]:
    """Train both networks on ``data``; returns the best epoch's scorer and its metrics.

    Metrics: ``loss_first``/``loss`` (classifier BCE of the first and last epoch),
    ``ae_loss_first``/``ae_loss``, ``val_pr_auc`` (out-of-fold stack) and friends of the kept
    epoch, ``best_epoch``, ``epochs``, ``seconds``.
    """
    cfg = resolve_config(config)
    started = time.perf_counter()
    seed = int(cfg["seed"])
    if len(data.x_train) == 0 or len(data.x_valid) == 0:
        raise ValueError("training and validation rows are both needed")
    if not (data.y_train == 1).any():
        raise ValueError("no fraud among the training rows")
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(seed)
        prep = Preprocessor.fit(
            data.x_train,
            data.features,
            data.log_features,
            bins=int(cfg["bins"]),
            clip=float(cfg["clip"]),
        )
        x_all = torch.from_numpy(prep.encode(data.x_train).astype(np.float32))
        y_all = torch.from_numpy(data.y_train.astype(np.float32))
        z_all = torch.from_numpy(prep.transform(data.x_train).astype(np.float32))
        legit = z_all[torch.from_numpy(data.y_train == 0)]
        classifier = Classifier(
            x_all.shape[1], tuple(int(h) for h in cfg["hidden"]), float(cfg["dropout"])
        )
        autoencoder = AutoEncoder(z_all.shape[1], int(cfg["ae_hidden"]), int(cfg["ae_bottleneck"]))
        opt = torch.optim.Adam(
            classifier.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
        )
        ae_opt = torch.optim.Adam(autoencoder.parameters(), lr=float(cfg["ae_lr"]))
        pos_weight = torch.tensor(float(cfg["pos_weight"]))
        batch = int(cfg["batch_size"])
        history: list[float] = []
        ae_history: list[float] = []
        best: tuple[float, int, FraudScorer, dict[str, float]] | None = None
        for epoch in range(1, int(cfg["epochs"]) + 1):
            classifier.train()
            total = 0.0
            for idx in np.array_split(rng.permutation(len(x_all)), max(1, len(x_all) // batch)):
                rows = torch.from_numpy(idx)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    classifier(x_all[rows]), y_all[rows], pos_weight=pos_weight
                )
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / len(x_all))
            autoencoder.train()
            ae_total = 0.0
            for idx in np.array_split(rng.permutation(len(legit)), max(1, len(legit) // batch)):
                rows = torch.from_numpy(idx)
                ae_loss = autoencoder.errors(legit[rows]).mean()
                ae_opt.zero_grad()
                ae_loss.backward()  # type: ignore[no-untyped-call]
                ae_opt.step()
                ae_total += float(ae_loss.detach()) * len(idx)
            ae_history.append(ae_total / max(len(legit), 1))
            scorer, val = build_scorer(cfg, data, prep, classifier, autoencoder)
            epoch_metrics = {"loss": history[-1], "ae_loss": ae_history[-1], **val}
            score = val["val_pr_auc"]
            if not math.isfinite(score):
                score = val["val_pr_auc_classifier"]
            improved = best is None or (math.isfinite(score) and score > best[0])
            if improved:
                best = (score if math.isfinite(score) else -math.inf, epoch, scorer, epoch_metrics)
            if on_epoch is not None:
                on_epoch(epoch, dict(epoch_metrics), scorer if improved else None)
        assert best is not None
        _, best_epoch, scorer, kept = best
        metrics = {
            **kept,
            "loss_first": history[0],
            "loss": history[-1],
            "ae_loss_first": ae_history[0],
            "ae_loss": ae_history[-1],
            "best_epoch": float(best_epoch),
            "epochs": float(len(history)),
            "seconds": time.perf_counter() - started,
        }
        if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["ae_loss"])):
            raise FloatingPointError(f"training diverged: {metrics}")
        scorer.info.update(
            {
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                "metrics": dict(metrics),
                "loss_history": history,
                "ae_loss_history": ae_history,
            }
        )
        return scorer, metrics
    finally:
        torch.set_num_threads(previous_threads)


def trainset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    features: Sequence[str],
    log_features: Sequence[str] = (),
    non_negative: Sequence[str] = (),
) -> TrainSet:
    """A :class:`TrainSet` with float64 arrays."""
    return TrainSet(
        np.asarray(x_train, np.float64),
        np.asarray(y_train, np.float64),
        np.asarray(x_valid, np.float64),
        np.asarray(y_valid, np.float64),
        tuple(features),
        tuple(log_features),
        tuple(non_negative),
    )


def trainable(config: dict[str, Any], data: TrainSet) -> None:
    """A Ray Tune trial: :func:`train`, reporting every epoch (the best epochs checkpointed)."""
    from cartwise.models import tuning

    tuning.seed_everything(int(config.get("seed", 0)))
    torch.set_num_threads(1)  # this trial's own worker: one CPU, one thread

    def report(epoch: int, metrics: dict[str, float], scorer: FraudScorer | None) -> None:
        score = metrics.get("val_pr_auc", math.nan)
        if not math.isfinite(score):
            score = metrics.get("val_pr_auc_classifier", math.nan)
        values = {k: v for k, v in metrics.items() if math.isfinite(v)}
        values["val_pr_auc"] = score if math.isfinite(score) else 0.0
        tuning.report(values, state=None if scorer is None else {"scorer": scorer})

    train({k: tuple(v) if k == "hidden" else v for k, v in config.items()}, data, on_epoch=report)


__all__ = [
    "DEFAULTS",
    "EpochCallback",
    "TrainSet",
    "build_scorer",
    "resolve_config",
    "train",
    "trainable",
    "trainset",
]
