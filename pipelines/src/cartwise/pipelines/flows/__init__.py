"""Prefect flows: thin compositions of tasks that call the other members."""

from __future__ import annotations

# Flow names as the CLI spells them -> "module:function", imported only when run.
FLOWS: dict[str, str] = {
    "refresh-features": "cartwise.pipelines.flows.features:refresh_features",
    "train-model": "cartwise.pipelines.flows.models:train_model",
    "evaluate-and-promote": "cartwise.pipelines.flows.models:evaluate_and_promote",
    "monitor-drift": "cartwise.pipelines.flows.monitoring:monitor_drift",
    "process-outbox": "cartwise.pipelines.flows.outbox:process_outbox",
    "release-expired-reservations": (
        "cartwise.pipelines.flows.maintenance:release_expired_reservations"
    ),
    "reports": "cartwise.pipelines.flows.reports:reports",
    "export": "cartwise.pipelines.flows.reports:export",
}
