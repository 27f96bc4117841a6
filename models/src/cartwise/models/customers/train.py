"""One training trial: the autoencoder, the churn MLP and the value MLP, deterministic for a seed.

:func:`fit` runs the epochs (each epoch trains all three networks once over the rows) and calls
``on_epoch(epoch, metrics, state)`` after each, where ``state()`` gives the state dicts (the
Tune trainable turns that into a checkpoint). :func:`build` turns a state into the torch-free
:class:`~.predict.CustomerModel`: k-means over the embeddings of the latest customers, segment
names from their profiles, and the value multiplier chosen on validation. :func:`train` does
both and keeps the epoch with the best validation churn PR-AUC.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cartwise.models.customers import data as cdata
from cartwise.models.customers.metrics import churn_metrics, value_metrics
from cartwise.models.customers.model import MLP, AutoEncoder, export
from cartwise.models.customers.predict import CustomerModel, forward, name_segments, profiles

DEFAULTS: dict[str, Any] = {
    "ae_hidden": 32,
    "ae_dim": 4,
    "ae_lr": 0.003,
    "hidden": 64,
    "layers": 2,
    "dropout": 0.1,
    "lr": 0.002,
    "weight_decay": 1e-4,
    "epochs": 30,
    "batch_size": 256,
    "clusters": 4,
    "seed": 0,
    "threads": 1,
}
VALUE_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0)
State = dict[str, Any]
EpochCallback = Callable[[int, dict[str, float], Callable[[], State]], None]


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS updated with ``config``; ``ValueError`` on unknown keys or bad values."""
    merged = {**DEFAULTS, **(config or {})}
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    for key in ("ae_hidden", "ae_dim", "hidden", "layers", "epochs", "batch_size", "clusters"):
        if int(merged[key]) < 1:
            raise ValueError(f"{key} must be >= 1")
    if int(merged["clusters"]) < 2:
        raise ValueError("clusters must be >= 2")
    return merged


def _nets(cfg: Mapping[str, Any], n_inputs: int) -> tuple[AutoEncoder, MLP, MLP]:
    ae = AutoEncoder(n_inputs, int(cfg["ae_hidden"]), int(cfg["ae_dim"]))
    churn = MLP(n_inputs, int(cfg["hidden"]), int(cfg["layers"]), 1, float(cfg["dropout"]))
    value = MLP(n_inputs, int(cfg["hidden"]), int(cfg["layers"]), 3, float(cfg["dropout"]))
    return ae, churn, value


def fit(
    config: Mapping[str, Any] | None, data: cdata.TrainData, on_epoch: EpochCallback | None = None
) -> tuple[State, dict[str, float], list[dict[str, float]]]:
    """Train the three networks; returns the best epoch's state, its metrics and the history."""
    cfg = resolve_config(config)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    try:
        torch.manual_seed(int(cfg["seed"]))
        rng = np.random.default_rng(int(cfg["seed"]))
        x = torch.from_numpy(data.scaled(data.x))
        xv = torch.from_numpy(data.scaled(data.x_valid))
        churned = torch.from_numpy(data.churned.astype(np.float32))
        bought = 1.0 - churned
        log_spend = torch.from_numpy(np.log1p(np.maximum(data.spend, 0.0)).astype(np.float32))
        ae, churn, value = _nets(cfg, x.shape[1])
        _init_bias(churn, [_logit(float(churned.mean()))])
        buyers_log = log_spend[bought > 0]
        mean_log = float(buyers_log.mean()) if len(buyers_log) else 0.0
        _init_bias(value, [_logit(float(bought.mean())), mean_log, float(log_spend.mean())])
        ae_opt = torch.optim.Adam(ae.parameters(), lr=float(cfg["ae_lr"]))
        decay = float(cfg["weight_decay"])
        churn_opt = torch.optim.AdamW(churn.parameters(), lr=float(cfg["lr"]), weight_decay=decay)
        value_opt = torch.optim.AdamW(value.parameters(), lr=float(cfg["lr"]), weight_decay=decay)
        bce = nn.functional.binary_cross_entropy_with_logits
        batch = int(cfg["batch_size"])
        history: list[dict[str, float]] = []
        # Each network keeps its own best epoch on validation (churn: PR-AUC, value: Spearman,
        # autoencoder: reconstruction); what is reported is the best-so-far of each, so the
        # reported churn PR-AUC never falls and the latest checkpoint is always the best.
        kept: dict[str, Any] = {}
        scores: dict[str, float] = {}
        reported: dict[str, float] = {}

        def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().clone() for k, v in net.state_dict().items()}

        def state() -> State:
            return {"config": dict(cfg), **kept}

        for epoch in range(int(cfg["epochs"])):
            ae.train(), churn.train(), value.train()
            sums = {"ae_loss": 0.0, "churn_loss": 0.0, "value_loss": 0.0}
            steps = 0
            for chosen in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
                idx = torch.from_numpy(chosen)
                xb = x[idx]
                recon, _ = ae(xb)
                loss_ae = nn.functional.mse_loss(recon, xb)
                ae_opt.zero_grad()
                loss_ae.backward()  # type: ignore[no-untyped-call]
                ae_opt.step()
                loss_churn = bce(churn(xb)[:, 0], churned[idx])
                churn_opt.zero_grad()
                loss_churn.backward()  # type: ignore[no-untyped-call]
                churn_opt.step()
                # Hurdle: P(buy) on everyone, log1p(spend) on the buyers only; plus a direct
                # log1p(spend) head on everyone (the better one on validation is served).
                out = value(xb)
                buyers = bought[idx]
                loss_value = bce(out[:, 0], buyers)
                loss_value = loss_value + nn.functional.mse_loss(out[:, 2], log_spend[idx])
                if float(buyers.sum()) > 0:
                    err = (out[:, 1] - log_spend[idx]) ** 2 * buyers
                    loss_value = loss_value + err.sum() / buyers.sum()
                value_opt.zero_grad()
                loss_value.backward()  # type: ignore[no-untyped-call]
                value_opt.step()
                sums["ae_loss"] += float(loss_ae.detach())
                sums["churn_loss"] += float(loss_churn.detach())
                sums["value_loss"] += float(loss_value.detach())
                steps += 1
            ae.eval(), churn.eval(), value.eval()
            with torch.no_grad():
                recon_v, _ = ae(xv)
                val_ae = float(nn.functional.mse_loss(recon_v, xv))
                p_churn = torch.sigmoid(churn(xv)[:, 0]).numpy().astype(np.float64)
                out_v = value(xv).numpy()
            metrics = {k: v / max(steps, 1) for k, v in sums.items()}
            metrics["ae_val_loss"] = val_ae
            churn_now = churn_metrics(data.churned_valid, p_churn)
            mode, value_now = _best_mode(out_v, data.spend_valid)
            if "ae" not in kept or val_ae <= scores["ae"]:
                kept["ae"], scores["ae"] = snapshot(ae), val_ae
            pr = churn_now["churn_pr_auc"]
            pr = -1.0 if np.isnan(pr) else pr
            if "churn" not in kept or pr > scores["churn"]:
                kept["churn"], scores["churn"] = snapshot(churn), pr
                reported |= churn_now
            rho = value_now["ltv_spearman"]
            if "value" not in kept or rho > scores["value"]:
                kept["value"], scores["value"] = snapshot(value), rho
                kept["value_mode"] = mode
                reported |= value_now
            metrics |= reported
            metrics["epoch"] = float(epoch + 1)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics, state)
        return state(), dict(history[-1]), history
    finally:
        torch.set_num_threads(previous)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def _init_bias(net: MLP, values: list[float]) -> None:
    """Start the output layer at the base rates (the heads then learn only the differences)."""
    last = [m for m in net.net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.copy_(torch.tensor(values, dtype=torch.float32))


def _best_mode(out: np.ndarray, spend: np.ndarray) -> tuple[str, dict[str, float]]:
    """The value head (hurdle or direct) with the higher validation Spearman, and its metrics."""
    best: tuple[str, dict[str, float]] | None = None
    for mode in ("hurdle", "direct"):
        result = value_metrics(spend, _value(out, 1.0, mode))
        if best is None or result["ltv_spearman"] > best[1]["ltv_spearman"]:
            best = (mode, result)
    assert best is not None
    return best


def _value(out: np.ndarray, scale: float, mode: str = "hurdle") -> np.ndarray:
    if mode == "direct":
        direct: np.ndarray = np.expm1(np.clip(out[:, 2], 0.0, 20.0)) * scale
        return direct
    buy = 1.0 / (1.0 + np.exp(-np.clip(out[:, 0], -30.0, 30.0)))
    result: np.ndarray = buy * np.expm1(np.clip(out[:, 1], 0.0, 20.0)) * scale
    return result


def build(
    state: State,
    data: cdata.TrainData,
    segment_features: pd.DataFrame,
    *,
    info: Mapping[str, Any] | None = None,
    rules: pd.DataFrame | None = None,
) -> CustomerModel:
    """The torch-free predictor from a trained state: segments fitted on ``segment_features``."""
    from sklearn.cluster import KMeans

    cfg = resolve_config(state["config"])
    ae, churn, value = _nets(cfg, len(cdata.INPUTS))
    ae.load_state_dict(state["ae"])
    churn.load_state_dict(state["churn"])
    value.load_state_dict(state["value"])
    encoder = export(ae.encoder)
    churn_layers = export(churn.net)
    value_layers = export(value.net)
    # The value multiplier that minimises validation MAE (ranking is unchanged by it).
    xv = data.scaled(data.x_valid)
    # The served value head and its multiplier: the pair with the lowest validation MAE (the
    # multiplier leaves the ranking, hence Spearman, unchanged).
    out_valid = forward(value_layers, xv)
    choice: tuple[str, float, float] | None = None
    for candidate in ("hurdle", "direct"):
        raw = _value(out_valid, 1.0, candidate)
        for s in VALUE_SCALES:
            error = float(np.mean(np.abs(raw * s - data.spend_valid)))
            if choice is None or error < choice[2]:
                choice = (candidate, float(s), error)
    assert choice is not None
    mode, value_scale = choice[0], choice[1]

    xs = data.scaled(cdata.matrix(segment_features))
    emb = forward(encoder, xs)
    emb_mean = emb.mean(axis=0)
    emb_std = emb.std(axis=0)
    emb_scale = np.where(emb_std > 1e-6, emb_std, 1.0).astype(np.float32)
    z = (emb - emb_mean) / emb_scale
    k = min(int(cfg["clusters"]), max(2, len(np.unique(z.round(4), axis=0))))
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=int(cfg["seed"])).fit(z)
    segment = kmeans.labels_.astype(np.int64)
    centroid_inputs = np.vstack(
        [
            xs[segment == s].mean(axis=0) if (segment == s).any() else xs.mean(axis=0)
            for s in range(k)
        ]
    )
    counts = np.bincount(segment, minlength=k).astype(np.float64)
    lifetime = pd.to_numeric(segment_features["spend_lifetime"]).to_numpy(np.float64)
    spend = np.array([lifetime[segment == s].mean() if counts[s] else 0.0 for s in range(k)])
    names = name_segments(centroid_inputs, counts / counts.sum(), spend)
    churn_p = 1.0 / (1.0 + np.exp(-forward(churn_layers, xs)[:, 0]))
    ltv = _value(forward(value_layers, xs), value_scale, mode)
    return CustomerModel(
        mean=data.mean.copy(),
        scale=data.scale.copy(),
        encoder=encoder,
        embed_mean=emb_mean.astype(np.float32),
        embed_scale=emb_scale,
        centroids=kmeans.cluster_centers_.astype(np.float32),
        names=names,
        profiles=profiles(segment_features, segment, names, churn_p, ltv),
        churn=churn_layers,
        value=value_layers,
        value_scale=value_scale,
        value_mode=mode,
        rules=rules,
        info={"config": dict(cfg), **data.info, **(info or {})},
    )


def train(
    config: Mapping[str, Any] | None,
    data: cdata.TrainData,
    segment_features: pd.DataFrame,
    *,
    on_epoch: EpochCallback | None = None,
    rules: pd.DataFrame | None = None,
) -> tuple[CustomerModel, dict[str, float]]:
    """Fit, keep the best epoch (validation churn PR-AUC) and build the predictor."""
    state, metrics, history = fit(config, data, on_epoch)
    model = build(state, data, segment_features, rules=rules)
    metrics = dict(metrics)
    metrics["ae_loss_first"] = history[0]["ae_loss"]
    metrics["ae_loss_last"] = history[-1]["ae_loss"]
    model.info["history"] = copy.deepcopy(history)
    return model, metrics


__all__ = ["DEFAULTS", "EpochCallback", "build", "fit", "resolve_config", "train"]
