"""``reports`` (daily and monthly business reports) and ``export`` (queued export jobs).

Reports go to object storage under ``reports/<kind>/<date>/``: for a day, ``sales``,
``customers`` and ``products`` as CSV and Parquet plus ``summary.html``; for a month, the
``cohorts`` table and its summary. Every key is fixed by the kind and the date, and each file
is stored in one atomic ``put``, so a re-run (after a crash, or for late orders) overwrites
the same files and never adds a second copy. ``manifest.json`` is written last: when it is
there, the whole report is.

``export`` runs :func:`cartwise.commerce.exports.service.run_job`, the same function the API's
in-process runner calls, for one job or every queued one; a job that already succeeded is
left alone.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task

RETRIES = 2
RETRY_DELAYS: list[float] = [5.0, 20.0]
TOP_PRODUCTS = 500
COHORT_MONTHS = 12


def _settings(overrides: dict[str, Any] | None) -> Any:
    from cartwise.platform.settings import Settings, get_settings

    return Settings(**overrides) if overrides else get_settings()


def _session(settings: Any) -> Any:
    from sqlmodel import Session

    from cartwise.platform.db import get_engine

    return Session(get_engine(settings), expire_on_commit=False)


def _storage(settings: Any) -> Any:
    from cartwise.platform.storage import get_storage

    return get_storage(settings)


def parse_day(day: str | None) -> date:
    """The report day: ``YYYY-MM-DD``, or yesterday (UTC) when not given."""
    if day is None:
        return datetime.now(UTC).date() - timedelta(days=1)
    return date.fromisoformat(day)


def parse_month(month: str | None) -> date:
    """The first day of the report month: ``YYYY-MM``, or last month (UTC) when not given."""
    if month is None:
        first = datetime.now(UTC).date().replace(day=1)
        return (first - timedelta(days=1)).replace(day=1)
    return date.fromisoformat(f"{month}-01")


def _add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _put_table(storage: Any, prefix: str, name: str, table: Any) -> dict[str, Any]:
    """Store a table as CSV and Parquet under ``prefix``; returns its keys and row count."""
    from cartwise.commerce.exports.models import ExportFormat
    from cartwise.commerce.exports.service import CONTENT_TYPES, Tabular, encode

    rows = list(table.rows)  # read once, written twice
    keys = []
    n = 0
    for fmt in (ExportFormat.csv, ExportFormat.parquet):
        data, n = encode(Tabular(table.columns, rows), fmt)
        key = f"{prefix}/{name}.{fmt.value}"
        storage.put(key, data, CONTENT_TYPES[fmt])
        keys.append(key)
    return {"rows": n, "keys": keys}


def _html(title: str, sections: list[tuple[str, list[str], list[list[Any]]]]) -> bytes:
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, header, rows in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><table><tr>")
        parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
        parts.append("</tr>")
        for row in rows:
            cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
            parts.append(f"<tr>{cells}</tr>")
        if not rows:
            parts.append(f"<tr><td colspan='{len(header)}'>nothing in this period</td></tr>")
        parts.append("</table>")
    return "".join(parts).encode("utf-8")


def _finish(storage: Any, prefix: str, files: dict[str, Any], summary: bytes) -> dict[str, Any]:
    storage.put(f"{prefix}/summary.html", summary, "text/html; charset=utf-8")
    manifest = {
        "prefix": prefix,
        "written_at": datetime.now(UTC).isoformat(),
        "files": files,
        "summary": f"{prefix}/summary.html",
    }
    storage.put(
        f"{prefix}/manifest.json",
        json.dumps(manifest, indent=2).encode("utf-8"),
        "application/json",
    )
    return manifest


@task(name="daily-report", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def daily_report(day: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sales, customers and products of one UTC day, as CSV + Parquet and an HTML summary."""
    from cartwise.commerce.events import business
    from cartwise.commerce.exports.service import Column, Tabular, customer_table

    settings = _settings(overrides)
    storage = _storage(settings)
    first = date.fromisoformat(day)
    start, end = _at(first), _at(first + timedelta(days=1))
    prefix = f"reports/daily/{first.isoformat()}"
    with _session(settings) as session:
        sales = business.sales(session=session, start=start, end=end)
        people = business.customers(session=session, start=start, end=end)
        top = business.top_sellers(session=session, start=start, end=end, limit=TOP_PRODUCTS)
        customer_rows = list(customer_table(session=session, start=start, end=end).rows)
    sales_rows: list[list[Any]] = [
        ["total", "", t.currency, t.revenue, t.orders, t.units] for t in sales.totals
    ]
    sales_rows += [
        ["category", c.category, c.currency, c.revenue, c.orders, c.units]
        for c in sales.by_category
    ]
    sales_rows += [
        ["country", c.country or "", c.currency, c.revenue, c.orders, c.units]
        for c in sales.by_country
    ]
    sales_cols = [
        Column("dimension", "str"),
        Column("key", "str"),
        Column("currency", "str"),
        Column("revenue", "money"),
        Column("orders", "int"),
        Column("units", "int"),
    ]
    product_cols = [
        Column("product_id", "int"),
        Column("name", "str"),
        Column("currency", "str"),
        Column("units", "int"),
        Column("revenue", "money"),
        Column("order_lines", "int"),
    ]
    product_rows = [
        [t.product_id, t.name, t.currency, t.units, t.revenue, t.order_lines] for t in top
    ]
    customer_cols = [
        Column("customer", "str"),
        Column("user_id", "int"),
        Column("email", "str"),
        Column("currency", "str"),
        Column("first_sale_at", "datetime"),
        Column("orders", "int"),
        Column("revenue", "money"),
        Column("segment", "str"),
    ]
    files = {
        "sales": _put_table(storage, prefix, "sales", Tabular(sales_cols, sales_rows)),
        "customers": _put_table(
            storage, prefix, "customers", Tabular(customer_cols, customer_rows)
        ),
        "products": _put_table(storage, prefix, "products", Tabular(product_cols, product_rows)),
    }
    summary = _html(
        f"Cartwise daily report {first.isoformat()}",
        [
            (
                "Sales",
                ["currency", "revenue", "orders", "units", "average order"],
                [
                    [t.currency, t.revenue, t.orders, t.units, t.average_order_value or "-"]
                    for t in sales.totals
                ],
            ),
            (
                "Customers",
                ["segment", "currency", "customers", "orders", "revenue", "average order"],
                [
                    [s.segment, s.currency, s.customers, s.orders, s.revenue, s.average_order_value]
                    for s in people.segments
                ],
            ),
            (
                "Top products",
                ["product", "currency", "units", "revenue"],
                [[t.name, t.currency, t.units, t.revenue] for t in top[:10]],
            ),
        ],
    )
    manifest = _finish(storage, prefix, files, summary)
    get_run_logger().info(
        "daily report %s: %s", first.isoformat(), {k: v["rows"] for k, v in files.items()}
    )
    return manifest


@task(name="monthly-cohort-report", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def monthly_report(month: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Acquisition cohorts of the 12 months up to the end of ``month``, with retention."""
    from cartwise.commerce.events import business
    from cartwise.commerce.exports.service import cohort_table

    settings = _settings(overrides)
    storage = _storage(settings)
    first = date.fromisoformat(f"{month}-01")
    start = _at(_add_months(first, 1 - COHORT_MONTHS))
    end = _at(_add_months(first, 1))
    prefix = f"reports/monthly/{first.strftime('%Y-%m')}"
    with _session(settings) as session:
        cells = business.cohorts(session=session, start=start, end=end)
    files = {"cohorts": _put_table(storage, prefix, "cohorts", cohort_table(cells))}
    summary = _html(
        f"Cartwise cohorts to {first.strftime('%Y-%m')}",
        [
            (
                "Retention by months since the first purchase",
                ["cohort", "month", "size", "active", "retention", "revenue"],
                [
                    [
                        c.cohort,
                        c.month_offset,
                        c.cohort_size,
                        c.customers,
                        f"{c.retention:.1%}" if c.retention is not None else "-",
                        f"{c.revenue} {c.currency}",
                    ]
                    for c in cells
                ],
            )
        ],
    )
    manifest = _finish(storage, prefix, files, summary)
    get_run_logger().info("monthly report %s: %d cohort cells", month, len(cells))
    return manifest


@flow(name="reports")
def reports(
    kind: str = "daily",
    day: str | None = None,
    month: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The daily report (yesterday by default) or, with kind="monthly", the cohort report."""
    if kind == "daily":
        return daily_report(parse_day(day).isoformat(), overrides)
    if kind == "monthly":
        return monthly_report(parse_month(month).strftime("%Y-%m"), overrides)
    raise ValueError(f"kind must be 'daily' or 'monthly', not {kind!r}")


@task(name="queued-exports", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def queued_exports(overrides: dict[str, Any] | None = None) -> list[int]:
    """The ids of the queued export jobs, oldest first."""
    from cartwise.commerce.exports.service import queued_ids

    with _session(_settings(overrides)) as session:
        return queued_ids(session=session)


@task(name="run-export", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def run_export(job_id: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one export job (a failure is recorded on the job, then retried)."""
    from cartwise.commerce.exports.service import run_job
    from cartwise.platform.errors import NotFound

    settings = _settings(overrides)
    with _session(settings) as session:
        try:
            job = run_job(session=session, storage=_storage(settings), job_id=job_id)
        except NotFound:  # nothing to retry
            get_run_logger().warning("export job %s does not exist", job_id)
            return {"status": "missing", "rows": None, "key": None}
    get_run_logger().info("export job %s: %s, %s rows", job_id, job.status, job.row_count)
    return {"status": str(job.status), "rows": job.row_count, "key": job.storage_key}


@flow(name="export")
def export(job_id: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one export job, or every queued one; returns each job's outcome."""
    ids = [job_id] if job_id is not None else queued_exports(overrides)
    outcomes: dict[str, Any] = {}
    for one in ids:
        try:
            outcomes[str(one)] = run_export(one, overrides)
        except Exception as exc:  # one failed job must not stop the others
            outcomes[str(one)] = {"status": "failed", "error": str(exc)}
    return outcomes


__all__ = ["export", "parse_day", "parse_month", "reports"]
