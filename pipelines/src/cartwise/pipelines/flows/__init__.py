"""Prefect flows: thin compositions of tasks that call the other members."""

from __future__ import annotations

# Flow names as the CLI spells them -> "module:function", imported only when run.
FLOWS: dict[str, str] = {
    "refresh-features": "cartwise.pipelines.flows.features:refresh_features",
    "train-model": "cartwise.pipelines.flows.models:train_model",
    "evaluate-and-promote": "cartwise.pipelines.flows.models:evaluate_and_promote",
}
