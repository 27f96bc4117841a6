"""Quality tables for ``bench/quality.py`` and the model cards under ``docs/models/``.

An area's ``evaluate.benchmark(...)`` returns one or more :class:`Section`: the protocol, one
:class:`Row` per model or baseline (all measured in the same run), the goal and whether it was
met. ``bench/quality.py`` prints each section with :func:`rich_table`, and :func:`write_card`
turns a section into a model card (data, protocol, metrics, limits, the command).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One model or baseline on one protocol."""

    model: str
    metrics: dict[str, float]
    baseline: bool = False
    note: str = ""  # chosen hyper-parameters, caveats
    seconds: float | None = None


@dataclass
class Section:
    """One protocol's table: rows, the goal, and the card's text."""

    key: str  # "recommend-online-retail": the card's file name
    title: str
    protocol: str  # how it was measured (markdown)
    metrics: list[str]  # column order
    primary: str  # the metric the goal is about
    higher_is_better: bool
    rows: list[Row]
    subject: str  # the row the goal is about (the model under test)
    goal: str  # e.g. "NDCG@10 ≥ 1.05 x the best baseline"
    goal_met: bool | None = None
    data: str = ""  # what data, licence, size
    limits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model_name: str = ""  # the registered model this card is about
    extra_tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def best_baseline(self, metric: str | None = None) -> Row | None:
        """The best baseline row on ``metric`` (the primary by default)."""
        metric = metric or self.primary
        rows = [r for r in self.rows if r.baseline and _finite(r.metrics.get(metric))]
        if not rows:
            return None
        pick = max if self._higher(metric) else min
        return pick(rows, key=lambda r: r.metrics[metric])

    def ratio(self, row: Row, metric: str | None = None) -> float:
        """``row``'s metric over the best baseline's (NaN when undefined)."""
        metric = metric or self.primary
        best = self.best_baseline(metric)
        if best is None or not best.metrics.get(metric):
            return math.nan
        return row.metrics.get(metric, math.nan) / best.metrics[metric]

    def row(self, model: str) -> Row:
        """The row named ``model``."""
        for r in self.rows:
            if r.model == model:
                return r
        raise KeyError(model)

    def _higher(self, metric: str) -> bool:
        if metric == self.primary:
            return self.higher_is_better
        # Error-type metrics are lower-is-better; scores (AUC, NDCG, recall, ...) higher.
        lower = ("wape", "mase", "mae", "rmse", "pinball", "loss", "brier", "error")
        return not any(p in metric.lower() for p in lower)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def rich_table(section: Section) -> Any:
    """The section as a rich Table: metrics plus the ratio to the best baseline."""
    from rich.table import Table

    table = Table(title=section.title, title_justify="left")
    table.add_column("model")
    table.add_column("kind")
    for metric in section.metrics:
        table.add_column(metric, justify="right")
    table.add_column(f"x best {section.primary}", justify="right")
    table.add_column("note")
    best = section.best_baseline()
    for row in section.rows:
        style = "bold" if row is best else ("green" if row.model == section.subject else None)
        table.add_row(
            row.model,
            "baseline" if row.baseline else "model",
            *(_fmt(row.metrics.get(m, math.nan)) for m in section.metrics),
            _fmt(section.ratio(row)),
            row.note,
            style=style,
        )
    return table


def goal_line(section: Section) -> str:
    """``goal: … → met/not met`` for the console."""
    verdict = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "n/a"}
    return f"goal: {section.goal} → {verdict[section.goal_met]}"


def markdown_table(section: Section) -> str:
    """The section's rows as a markdown table."""
    head = ["model", "kind", *section.metrics, f"x best {section.primary}", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in section.rows:
        cells = [
            f"**{row.model}**" if row.model == section.subject else row.model,
            "baseline" if row.baseline else "model",
            *(_fmt(row.metrics.get(m, math.nan)) for m in section.metrics),
            _fmt(section.ratio(row)),
            row.note.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _records_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "(empty)"
    head = list(records[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r.get(h, "")) for h in head) + " |" for r in records]
    return "\n".join(lines)


def write_card(section: Section, folder: Path, *, command: str, date: str) -> Path:
    """Write ``<folder>/<section.key>.md``: data, protocol, metrics, goal, limits, command."""
    folder.mkdir(parents=True, exist_ok=True)
    verdict = {True: "met", False: "not met", None: "n/a"}[section.goal_met]
    parts = [
        f"# Model card: {section.title}",
        "",
        f"Registered model: `{section.model_name}`." if section.model_name else "",
        f"Measured {date} with:",
        "",
        f"    {command}",
        "",
        "## Data",
        section.data or "(see the protocol)",
        "",
        "## Protocol",
        section.protocol,
        "",
        "## Results",
        markdown_table(section),
        "",
        f"**Goal:** {section.goal} — **{verdict}**.",
    ]
    for name, records in section.extra_tables.items():
        parts += ["", f"### {name}", _records_table(records)]
    if section.notes:
        parts += ["", "## Notes", *(f"- {n}" for n in section.notes)]
    if section.limits:
        parts += ["", "## Limits", *(f"- {n}" for n in section.limits)]
    path = folder / f"{section.key}.md"
    path.write_text("\n".join(p for p in parts if p is not None) + "\n")
    return path


__all__ = ["Row", "Section", "goal_line", "markdown_table", "rich_table", "write_card"]
