"""Every notebook in notebooks/ runs top to bottom on the committed sample, in the venv's kernel."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow

# The notebooks' own parameters size a shop for a person exploring it; the tests run them on
# the smallest shop that still exercises every cell (papermill's way: a cell injected after
# the one tagged "parameters").
TEST_PARAMETERS: dict[str, dict[str, object]] = {
    "02_recommender": {"CUSTOMERS": 300, "DAYS": 90, "PRODUCTS": 80, "TUNE_SAMPLES": 1},
    "03_demand_and_customers": {"CUSTOMERS": 400, "DAYS": 120, "PRODUCTS": 80},
}


# Seconds each took alone here: the pool starts the longest first.
COST = {"03_demand_and_customers": 107, "04_monitoring": 85, "02_recommender": 80}


def _inject_parameters(nb: nbformat.NotebookNode, values: dict[str, object]) -> None:
    """Insert ``NAME = value`` assignments right after the cell tagged "parameters"."""
    if not values:
        return
    at = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)


def _stream_text(nb: nbformat.NotebookNode) -> str:
    """Everything the cells printed, in order."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_notebooks_are_committed_clean() -> None:
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name}: outputs are committed"
                assert cell.execution_count is None, f"{path.name}: execution counts"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"


def _execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook in a kernel of its own; the executed notebook and the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    _inject_parameters(nb, TEST_PARAMETERS.get(path.stem, {}))
    # A last cell of our own reports which interpreter the kernel really ran.
    nb.cells.append(nbformat.v4.new_code_cell('import sys\nprint("KERNEL_PREFIX=" + sys.prefix)'))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        # Relative paths in a notebook resolve as in Jupyter: from the notebook's folder.
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell or assertion
    return nb, time.perf_counter() - started


@pytest.fixture(scope="module")
def executed(request: pytest.FixtureRequest) -> Iterator[dict[Path, Future[tuple[Any, float]]]]:
    """The selected notebooks, two at a time (each kernel is mostly one busy core, and the
    machine has two), longest first; each test waits for its own."""
    selected = {
        item.callspec.params["path"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_notebook_runs" and hasattr(item, "callspec")
    }
    order = sorted(selected, key=lambda p: -COST.get(p.stem, 30))
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notebook")
    futures = {path: pool.submit(_execute, path) for path in order}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, executed: dict[Path, Future[tuple[Any, float]]]) -> None:
    nb, elapsed = executed[path].result()
    printed = _stream_text(nb)
    # The kernel must be this venv's interpreter, not some other Python on the machine.
    assert f"KERNEL_PREFIX={sys.prefix}\n" in printed, printed[-500:]
    if path.stem == "01_features":
        assert "checks passed:" in printed, printed[-2000:]
        rows = int(printed.split("checks passed: ", 1)[1].split(" training rows", 1)[0])
        assert rows > 0
        assert _images(nb) == 2  # the RFM histograms and the cohort heat map
    elif path.stem == "02_recommender":
        assert "checks passed:" in printed, printed[-2000:]
        assert _images(nb) == 1  # the trials' validation curves
    elif path.stem == "03_demand_and_customers":
        assert "checks passed:" in printed, printed[-2000:]
        # forecast bands, the decomposition, segment sizes, churn calibration
        assert _images(nb) == 4
    elif path.stem == "04_monitoring":
        assert "checks passed:" in printed, printed[-2000:]
        reports = int(printed.split("checks passed: ", 1)[1].split(" reports", 1)[0])
        assert reports >= 3  # one per window end of the generated history
        assert _images(nb) == 1  # drift share over time beside feature importance
    print(f"{path.name}: {elapsed:.1f} s")
