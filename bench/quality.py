"""Model quality on real data, against baselines measured in the same run.

    uv run python bench/quality.py                       # ../shared/datasets, every section
    uv run python bench/quality.py --quick               # a fifth of the customers, small grids
    uv run python bench/quality.py --data PATH --only recommend

``--data`` is a datasets folder (holding ``online_retail/online_retail.parquet``), the
``online_retail`` folder itself, or the Parquet file. A relative path is taken from the repo
root. Each area is one section function (``recommend`` for now); a section prints its table:
model, metrics, and the ratio to the best baseline, with the issue's goal beside it.

Recommendations, Online Retail (UCI, CC BY 4.0; Chen, Sain & Guo 2012): purchases are the
importer's cleaned rows (:mod:`cartwise.commerce.importing.online_retail`: no duplicates,
product codes only, positive prices) that are sales by a known CustomerID. Train on purchases
up to 2011-09-30, test on 2011-10-01 … 2011-12-09 by customers seen in training, full ranking
over every product, nothing excluded (see :mod:`cartwise.models.recommend.evaluate`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/datasets"
# Wide enough for the table when the output is piped to a file (docs record it).
console = Console(width=None if sys.stdout.isatty() else 170)


def resolve_online_retail(data: str | Path) -> Path:
    """The Online Retail Parquet file from a datasets folder, its subfolder, or the file."""
    path = Path(data)
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    for candidate in (
        path,
        path / "online_retail.parquet",
        path / "online_retail" / "online_retail.parquet",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no Online Retail Parquet at {path} (expected online_retail/online_retail.parquet)"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf (stacked)"
        return f"{value:g}"
    return str(value)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def recommend(
    data: str | Path, *, quick: bool = False, seed: int = 0, cards: bool = False, command: str = ""
) -> dict[str, Any]:
    """Recommendations on Online Retail: baselines, BPR-MF and the hybrid; prints the table."""
    from cartwise.commerce.importing.online_retail import (
        ImportSummary,
        clean,
        normalize,
        read_frame,
    )
    from cartwise.models.recommend.data import from_online_retail
    from cartwise.models.recommend.evaluate import PRIMARY, online_retail

    path = resolve_online_retail(data)
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("recommend: reading Online Retail", total=None)
        _, raw = read_frame(path)
        cleaned = clean(normalize(raw), ImportSummary(path=str(path)))
        purchases = from_online_retail(cleaned)
        del raw, cleaned

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"recommend: {stage}", completed=done, total=total)

        result = online_retail(purchases, quick=quick, seed=seed, progress=report)
    elapsed = time.perf_counter() - started

    info = result.info
    title = (
        f"Recommendations, Online Retail{' (quick: 20% of customers)' if quick else ''}: "
        f"train before {info['cutoff']}, test {info['cutoff']} … {info['last_test_day']}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("kind")
    table.add_column("NDCG@10", justify="right")
    table.add_column("Recall@20", justify="right")
    table.add_column("x best NDCG@10", justify="right")
    table.add_column("x best Recall@20", justify="right")
    table.add_column("valid NDCG@10", justify="right")
    table.add_column("chosen on validation")
    table.add_column("s", justify="right")
    best = result.best_baseline(PRIMARY)
    best_recall = result.best_baseline("recall@20")
    for row in result.rows:
        params = ", ".join(
            f"{k}={_fmt(v)}"
            for k, v in row.params.items()
            if row.model != "BPR-MF" or k in ("dim", "epochs", "reg", "positives")
        )
        style = "bold" if row is best else ("green" if row.kind == "model" else None)
        table.add_row(
            row.model,
            row.kind,
            f"{row.test['ndcg@10']:.4f}",
            f"{row.test['recall@20']:.4f}",
            f"{result.ratio(row, 'ndcg@10'):.3f}",
            f"{result.ratio(row, 'recall@20'):.3f}",
            f"{row.valid['ndcg@10']:.4f}" if "ndcg@10" in row.valid else "—",
            params,
            f"{row.seconds:.0f}",
            style=style,
        )
    console.print(table)
    console.print(
        f"data: {info['train_users']} customers x {info['items']} products, "
        f"{info['train_lines']} purchase lines in training; {info['test_users']} test customers, "
        f"{info['test_pairs']} (customer, product) test pairs, "
        f"{info['test_pairs_repurchase']:.1%} of them re-purchases, "
        f"{info['test_pairs_unknown_item']} of them of products unseen in training (unrankable). "
        f"Validation window {info['valid_from']} … {info['cutoff']} "
        f"({info['valid_users']} customers)."
    )
    console.print(
        f"best baseline: {best.model} (NDCG@10 {best.test['ndcg@10']:.4f}); "
        f"best Recall@20 baseline: {best_recall.model}."
    )
    goal = 1.05
    verdicts: dict[str, float] = {}
    for name in ("hybrid (re-ranker)", "BPR-MF + repurchase", "BPR-MF"):
        try:
            row = result.row(name)
        except KeyError:
            continue
        verdicts[name] = result.ratio(row)
    hybrid_ratio = verdicts.get("hybrid (re-ranker)", math.nan)
    met = hybrid_ratio >= goal
    console.print(
        f"goal: hybrid NDCG@10 ≥ {goal} x best baseline → {hybrid_ratio:.3f} x "
        + ("[green]met[/green]" if met else "[red]not met[/red]")
        + f"   ({elapsed:.0f} s)"
    )
    section = _recommend_section(result, quick=quick, met=met)
    if cards:
        _write_card(section, command)
    extra: list[Any] = []
    module = __import__("cartwise.models.recommend.evaluate", fromlist=["evaluate"])
    if hasattr(module, "benchmark"):
        # The other recommendation protocols (MovieLens 100K, two-tower, session model).
        extra = area_sections("recommend")(
            data, quick=quick, seed=seed, cards=cards, command=command
        )["sections"]
    return {"report": result, "goal_met": met, "seconds": elapsed, "sections": [section, *extra]}


def _recommend_section(result: Any, *, quick: bool, met: bool) -> Any:
    """The Online Retail recommendation table as a report Section (for its model card)."""
    from cartwise.models.report import Row, Section

    info = result.info
    rows = [
        Row(
            model=row.model,
            metrics={k: v for k, v in row.test.items() if k in ("ndcg@10", "recall@20")},
            baseline=row.kind == "baseline",
            note=", ".join(f"{k}={_fmt(v)}" for k, v in list(row.params.items())[:4]),
            seconds=row.seconds,
        )
        for row in result.rows
    ]
    return Section(
        key="recommend-online-retail",
        title="Recommendations, Online Retail" + (" (quick)" if quick else ""),
        protocol=(
            f"Train on purchases before {info['cutoff']}; test on the purchases of "
            f"{info['cutoff']} … {info['last_test_day']} by customers seen in training. Full "
            "ranking over every product, nothing excluded; NDCG@10 and Recall@20. Baseline "
            "hyper-parameters (item-kNN neighbours, EASE λ, recency half-life, blend weight) and "
            f"the models' are chosen on the validation window {info['valid_from']} … "
            f"{info['cutoff']}, then refit on all training data."
        ),
        metrics=["ndcg@10", "recall@20"],
        primary="ndcg@10",
        higher_is_better=True,
        rows=rows,
        subject="hybrid (re-ranker)",
        goal="hybrid NDCG@10 ≥ 1.05 x the best baseline",
        goal_met=met,
        data=(
            "UCI Online Retail (CC BY 4.0; Chen, Sain & Guo 2012), cleaned by the importer: "
            f"{info['train_users']} customers x {info['items']} products, "
            f"{info['train_lines']} purchase lines in training, {info['test_users']} test "
            f"customers, {info['test_pairs_repurchase']:.1%} of test pairs are re-purchases."
        ),
        model_name="recommend",
        limits=[
            "Products first sold in the test window cannot be ranked by any model here "
            f"({info['test_pairs_unknown_item']} test pairs).",
            "Customers new in the test window are excluded (the protocol's choice); they get "
            "session-based or popular results in serving.",
        ],
    )


def _write_card(section: Any, command: str) -> None:
    from datetime import UTC, datetime

    from cartwise.models.report import write_card

    path = write_card(
        section,
        ROOT / "docs" / "models",
        command=command,
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    console.print(f"model card: {path.relative_to(ROOT)}")


def area_sections(area: str) -> Callable[..., dict[str, Any]]:
    """A section that runs ``cartwise.models.<area>.evaluate.benchmark`` and prints its tables.

    ``benchmark(data, *, quick, seed, progress)`` (``data`` a :class:`sources.BenchData`) returns
    :class:`cartwise.models.report.Section`; each is printed, and with ``--cards`` written as a
    model card under ``docs/models/``.
    """

    def run(
        data: str | Path,
        *,
        quick: bool = False,
        seed: int = 0,
        cards: bool = False,
        command: str = "",
    ) -> dict[str, Any]:
        import importlib

        from sources import BenchData  # bench/ is on sys.path when this script runs

        from cartwise.models.report import goal_line, rich_table

        module = importlib.import_module(f"cartwise.models.{area}.evaluate")
        bench_data = BenchData(Path(data))
        started = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task(f"{area}", total=None)

            def report(stage: str, done: int, total: int) -> None:
                bar.update(task, description=f"{area}: {stage}", completed=done, total=total)

            sections = module.benchmark(bench_data, quick=quick, seed=seed, progress=report)
        elapsed = time.perf_counter() - started
        for section in sections:
            console.print(rich_table(section))
            for note in section.notes:
                console.print(f"  {note}")
            console.print(goal_line(section))
            if cards:
                _write_card(section, command)
        console.print(f"({elapsed:.0f} s)")
        return {"sections": sections, "seconds": elapsed}

    return run


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "recommend": recommend,
    **{area: area_sections(area) for area in ("search", "customers", "demand", "fraud")},
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen quality sections and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", default=DEFAULT_DATA, help="datasets folder (or file)")
    parser.add_argument("--quick", action="store_true", help="small subsample, small grids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", choices=sorted(SECTIONS), action="append", help="run only these sections"
    )
    parser.add_argument(
        "--cards", action="store_true", help="write the model cards under docs/models/"
    )
    args = parser.parse_args(argv)
    command = "uv run python bench/quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    for name in args.only or list(SECTIONS):
        console.rule(f"[bold]{name}")
        SECTIONS[name](
            args.data, quick=args.quick, seed=args.seed, cards=args.cards, command=command
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
