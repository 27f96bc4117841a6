"""Export jobs: create, list, and run one (query → CSV or Parquet → object storage).

A job writes exactly one object, ``exports/<job id>/<kind>.<format>``. The file is built in
full first and then stored in one ``put`` (a rename on local disk, one PUT on S3), so a
reader never sees half a file, and running the same job again overwrites the same key
instead of adding a second file: a job is idempotent by its id. A job is claimed with a
compare-and-set on its status and attempt count, so two runners cannot both run it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, case, func, select, update
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from cartwise.commerce.catalog.models import Category, Product
from cartwise.commerce.events import business
from cartwise.commerce.exports.models import (
    ExportFormat,
    ExportJob,
    ExportJobPublic,
    ExportKind,
    ExportRequest,
    ExportStatus,
)
from cartwise.commerce.orders.models import Order, OrderLine
from cartwise.platform.errors import NotFound, Unprocessable
from cartwise.platform.storage import Storage
from cartwise.platform.types import utcnow

log = logging.getLogger(__name__)

BATCH = 10_000
STALE_RUNNING = timedelta(minutes=30)
MAX_ERROR = 2000
CONTENT_TYPES = {
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.parquet: "application/vnd.apache.parquet",
}

_order: Table = Order.__table__  # type: ignore[attr-defined]
_line: Table = OrderLine.__table__  # type: ignore[attr-defined]
_product: Table = Product.__table__  # type: ignore[attr-defined]
_category: Table = Category.__table__  # type: ignore[attr-defined]


class ExportFailed(RuntimeError):
    """A job ran and failed; the error is recorded on the job."""


# ------------------------------------------------------------------ tables → files


@dataclass(frozen=True)
class Column:
    """A named column and its type: str, int, float, money, datetime or date."""

    name: str
    type: str


@dataclass
class Tabular:
    """Columns and a stream of row tuples (read once)."""

    columns: Sequence[Column]
    rows: Iterable[Sequence[Any]]


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def to_csv(table: Tabular) -> tuple[bytes, int]:
    """The table as UTF-8 CSV with a header row; returns the bytes and the row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in table.columns])
    n = 0
    for row in table.rows:
        writer.writerow([_cell(v) for v in row])
        n += 1
    return buffer.getvalue().encode("utf-8"), n


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "money": pa.decimal128(14, 2),
        "datetime": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }[kind]


def _batches(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def to_parquet(table: Tabular) -> tuple[bytes, int]:
    """The table as Parquet (money as decimal(14, 2), times in UTC), written in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in table.columns])
    sink = io.BytesIO()
    n = 0
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in _batches(table.rows, BATCH):
            arrays = []
            for i, column in enumerate(table.columns):
                values = [row[i] for row in batch]
                if column.type == "money":
                    values = [
                        None if v is None else Decimal(v).quantize(Decimal("0.01")) for v in values
                    ]
                arrays.append(pa.array(values, type=schema.field(i).type))
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            n += len(batch)
        if n == 0:
            writer.write_table(schema.empty_table())
    return sink.getvalue(), n


def encode(table: Tabular, fmt: ExportFormat) -> tuple[bytes, int]:
    """The table in the given format, and how many rows it has."""
    return to_csv(table) if fmt is ExportFormat.csv else to_parquet(table)


# ------------------------------------------------------------------ what each kind holds


def _stream(session: Session, stmt: Any) -> Iterator[Sequence[Any]]:
    # yield_per streams with a server-side cursor on PostgreSQL, so a large export is not
    # held twice in memory (once as rows, once as the file being built).
    yield from session.execute(stmt.execution_options(yield_per=BATCH))


def _in_range(start: datetime, end: datetime) -> Any:
    return (_order.c.created_at >= start) & (_order.c.created_at < end)


def export_table(*, session: Session, kind: ExportKind, start: datetime, end: datetime) -> Tabular:
    """The rows of an export kind over [start, end), as columns and a row stream."""
    if kind is ExportKind.orders:
        names = [
            ("id", "str"),
            ("created_at", "datetime"),
            ("status", "str"),
            ("user_id", "int"),
            ("country", "str"),
            ("currency", "str"),
            ("subtotal", "money"),
            ("discount", "money"),
            ("shipping", "money"),
            ("tax", "money"),
            ("total", "money"),
            ("refunded_amount", "money"),
            ("voucher_code", "str"),
        ]
        stmt = (
            select(*[_order.c[n] for n, _ in names])
            .where(_in_range(start, end))
            .order_by(_order.c.created_at, _order.c.id)
        )
        return Tabular([Column(n, t) for n, t in names], _stream(session, stmt))
    if kind is ExportKind.order_lines:
        stmt = (
            select(
                _line.c.order_id,
                _order.c.created_at,
                _order.c.status,
                _order.c.currency,
                _line.c.sku,
                _line.c.product_id,
                _line.c.product_name,
                _line.c.quantity,
                _line.c.unit_price,
                _line.c.line_total,
            )
            .select_from(_line.join(_order, _order.c.id == _line.c.order_id))
            .where(_in_range(start, end))
            .order_by(_order.c.created_at, _line.c.order_id, _line.c.id)
        )
        columns = [
            Column("order_id", "str"),
            Column("created_at", "datetime"),
            Column("status", "str"),
            Column("currency", "str"),
            Column("sku", "str"),
            Column("product_id", "int"),
            Column("product_name", "str"),
            Column("quantity", "int"),
            Column("unit_price", "money"),
            Column("line_total", "money"),
        ]
        return Tabular(columns, _stream(session, stmt))
    if kind is ExportKind.sales_daily:
        report = business.sales(session=session, start=start, end=end)
        return Tabular(
            [
                Column("day", "date"),
                Column("currency", "str"),
                Column("orders", "int"),
                Column("units", "int"),
                Column("revenue", "money"),
            ],
            [(r.day, r.currency, r.orders, r.units, r.revenue) for r in report.by_day],
        )
    if kind is ExportKind.products:
        return product_table(session=session, start=start, end=end)
    if kind is ExportKind.customers:
        return customer_table(session=session, start=start, end=end)
    if kind is ExportKind.cohorts:
        return cohort_table(business.cohorts(session=session, start=start, end=end))
    raise Unprocessable(f"unknown export kind {kind!r}")  # pragma: no cover - enum is closed


def cohort_table(cells: Sequence[business.CohortCell]) -> Tabular:
    """Cohort cells as a table: one row per cohort, month offset and currency."""
    return Tabular(
        [
            Column("cohort", "str"),
            Column("month_offset", "int"),
            Column("cohort_size", "int"),
            Column("customers", "int"),
            Column("retention", "float"),
            Column("orders", "int"),
            Column("currency", "str"),
            Column("revenue", "money"),
        ],
        [
            (
                c.cohort,
                c.month_offset,
                c.cohort_size,
                c.customers,
                c.retention,
                c.orders,
                c.currency,
                c.revenue,
            )
            for c in cells
        ],
    )


def product_table(*, session: Session, start: datetime, end: datetime) -> Tabular:
    """Every product with its category and its sales over [start, end) (zero when none)."""
    d = session.get_bind().dialect.name
    sold = (
        select(
            _line.c.product_id,
            _order.c.currency,
            func.sum(_line.c.quantity).label("units"),
            business.money_sum(d, _line.c.line_total).label("revenue"),
            func.count().label("order_lines"),
        )
        .select_from(_line.join(_order, _order.c.id == _line.c.order_id))
        .where(business.sales_filter(start, end))
        .group_by(_line.c.product_id, _order.c.currency)
        .subquery("sold")
    )
    stmt = (
        select(
            _product.c.id,
            _product.c.name,
            _product.c.slug,
            _product.c.status,
            _category.c.name,
            sold.c.currency,
            func.coalesce(sold.c.units, 0),
            sold.c.revenue,
            func.coalesce(sold.c.order_lines, 0),
        )
        .select_from(
            _product.outerjoin(_category, _category.c.id == _product.c.category_id).outerjoin(
                sold, sold.c.product_id == _product.c.id
            )
        )
        .order_by(_product.c.id, sold.c.currency)
    )
    columns = [
        Column("product_id", "int"),
        Column("name", "str"),
        Column("slug", "str"),
        Column("status", "str"),
        Column("category", "str"),
        Column("currency", "str"),
        Column("units", "int"),
        Column("revenue", "money"),
        Column("order_lines", "int"),
    ]

    def rows() -> Iterator[Sequence[Any]]:
        for *head, rev, lines in _stream(session, stmt):
            yield (*head, business.to_money(d, rev), lines)

    return Tabular(columns, rows())


def customer_table(*, session: Session, start: datetime, end: datetime) -> Tabular:
    """Each customer with a sale in [start, end): orders, revenue, first sale, new or not."""
    d = session.get_bind().dialect.name
    key = business.customer_key()
    first_sale = (
        select(key.label("ckey"), func.min(_order.c.created_at).label("first_at"))
        .where(
            _order.c.status.in_([s.value for s in business.SALE_STATUSES]),
            _order.c.created_at < end,
        )
        .group_by(key)
        .subquery("first_sale")
    )
    values = business.order_values(d, start, end)
    per_order = (
        select(
            _order.c.id,
            _order.c.currency,
            _order.c.user_id,
            _order.c.email,
            key.label("ckey"),
            values.c.revenue.label("value"),
        )
        .select_from(_order.join(values, values.c.order_id == _order.c.id))
        .subquery("per_order")
    )
    stmt = (
        select(
            per_order.c.ckey,
            func.max(per_order.c.user_id),
            func.max(per_order.c.email),
            per_order.c.currency,
            func.min(first_sale.c.first_at),
            func.count(),
            func.sum(per_order.c.value),
            case((func.min(first_sale.c.first_at) >= start, "new"), else_="returning"),
        )
        .select_from(per_order.join(first_sale, first_sale.c.ckey == per_order.c.ckey))
        .group_by(per_order.c.ckey, per_order.c.currency)
        .order_by(per_order.c.ckey, per_order.c.currency)
    )
    columns = [
        Column("customer", "str"),
        Column("user_id", "int"),
        Column("email", "str"),
        Column("currency", "str"),
        Column("first_sale_at", "datetime"),
        Column("orders", "int"),
        Column("revenue", "money"),
        Column("segment", "str"),
    ]

    def rows() -> Iterator[Sequence[Any]]:
        for ckey, uid, email, cur, first, n, value, segment in _stream(session, stmt):
            if isinstance(first, str):  # SQLite returns min() of a timestamp as text
                first = datetime.fromisoformat(first).replace(tzinfo=UTC)
            yield (ckey, uid, email, cur, first, n, business.to_money(d, value), segment)

    return Tabular(columns, rows())


# ------------------------------------------------------------------ jobs


def storage_key(job: ExportJob) -> str:
    """Where a job's file goes; the same for every run of the job."""
    return f"exports/{job.id}/{ExportKind(job.kind).value}.{ExportFormat(job.format).value}"


def job_range(job: ExportJob) -> tuple[datetime, datetime]:
    """The [start, end) a job was created with."""
    return datetime.fromisoformat(job.params["start"]), datetime.fromisoformat(job.params["end"])


def create_job(*, session: Session, request: ExportRequest, requested_by: int | None) -> ExportJob:
    """Record a queued job with its range fixed now (so every run exports the same rows)."""
    end = request.end.astimezone(UTC) if request.end else utcnow()
    start = request.start.astimezone(UTC) if request.start else end - business.DEFAULT_RANGE
    if start >= end:
        raise Unprocessable("start must be before end.")
    if end - start > business.MAX_RANGE:
        raise Unprocessable(f"the range may span at most {business.MAX_RANGE.days} days.")
    job = ExportJob(
        kind=request.kind,
        format=request.format,
        params={"start": start.isoformat(), "end": end.isoformat()},
        requested_by=requested_by,
    )
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get_job(*, session: Session, job_id: int) -> ExportJob:
    """One job (NotFound when it does not exist)."""
    job = session.get(ExportJob, job_id)
    if job is None:
        raise NotFound(f"export job {job_id} not found.")
    return job


def list_jobs(*, session: Session, limit: int = 50, offset: int = 0) -> tuple[list[ExportJob], int]:
    """The newest jobs first, and how many there are."""
    total = int(session.exec(sql_select(func.count()).select_from(ExportJob)).one())
    jobs = session.exec(
        sql_select(ExportJob)
        .order_by(col(ExportJob.created_at).desc(), col(ExportJob.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(jobs), total


def queued_ids(*, session: Session) -> list[int]:
    """The ids of the queued jobs, oldest first."""
    return [
        int(i)
        for i in session.exec(
            sql_select(ExportJob.id)
            .where(col(ExportJob.status) == ExportStatus.queued.value)
            .order_by(col(ExportJob.created_at), col(ExportJob.id))
        )
        if i is not None
    ]


def to_public(job: ExportJob, storage: Storage) -> ExportJobPublic:
    """The API view of a job, with a download URL once it has succeeded."""
    assert job.id is not None
    url = None
    if job.status == ExportStatus.succeeded and job.storage_key:
        url = storage.url(job.storage_key)
    return ExportJobPublic(
        id=job.id,
        kind=job.kind,
        format=job.format,
        params=job.params,
        status=job.status,
        row_count=job.row_count,
        error=job.error,
        attempts=job.attempts,
        requested_by=job.requested_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        storage_key=job.storage_key,
        url=url,
    )


def set_runner_ref(*, session: Session, job_id: int, ref: str) -> None:
    """Remember the runner's handle on a job (a flow run id, a thread name)."""
    session.execute(
        update(ExportJob).where(col(ExportJob.id) == job_id).values(runner_ref=ref[:80])
    )
    session.commit()


def _claim(session: Session, job: ExportJob) -> bool:
    # Compare-and-set on (status, attempts): of two runners given the same job, one wins.
    result = session.execute(
        update(ExportJob)
        .where(
            col(ExportJob.id) == job.id,
            col(ExportJob.status) == job.status,
            col(ExportJob.attempts) == job.attempts,
        )
        .values(
            status=ExportStatus.running.value,
            attempts=job.attempts + 1,
            started_at=utcnow(),
            finished_at=None,
            error=None,
        )
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def run_job(*, session: Session, storage: Storage, job_id: int) -> ExportJob:
    """Run one job: claim it, build the file, store it, record the result.

    A job that already succeeded (and whose file is still stored) is left alone, and so is one
    another runner started less than :data:`STALE_RUNNING` ago. A queued or failed job, or a
    stale running one (its runner died), is run, to the same key. Raises
    :class:`ExportFailed` after recording the error when the export itself fails.
    """
    job = get_job(session=session, job_id=job_id)
    if job.status == ExportStatus.succeeded and job.storage_key and storage.exists(job.storage_key):
        return job
    if (
        job.status == ExportStatus.running
        and job.started_at is not None
        and utcnow() - job.started_at < STALE_RUNNING
    ):
        return job  # another runner is on it; only a stale run is taken over
    if not _claim(session, job):
        session.expire_all()
        return get_job(session=session, job_id=job_id)
    session.expire_all()
    job = get_job(session=session, job_id=job_id)
    key = storage_key(job)
    try:
        start, end = job_range(job)
        table = export_table(session=session, kind=ExportKind(job.kind), start=start, end=end)
        fmt = ExportFormat(job.format)
        data, rows = encode(table, fmt)
        storage.put(key, data, CONTENT_TYPES[fmt])
    except Exception as exc:
        session.rollback()
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        session.execute(
            update(ExportJob)
            .where(col(ExportJob.id) == job_id)
            .values(status=ExportStatus.failed.value, error=message, finished_at=utcnow())
        )
        session.commit()
        log.warning("export job %s failed: %s", job_id, message)
        raise ExportFailed(message) from exc
    session.execute(
        update(ExportJob)
        .where(col(ExportJob.id) == job_id)
        .values(
            status=ExportStatus.succeeded.value,
            storage_key=key,
            row_count=rows,
            error=None,
            finished_at=utcnow(),
        )
    )
    session.commit()
    session.expire_all()
    return get_job(session=session, job_id=job_id)


__all__ = [
    "CONTENT_TYPES",
    "Column",
    "ExportFailed",
    "Tabular",
    "cohort_table",
    "create_job",
    "encode",
    "export_table",
    "get_job",
    "list_jobs",
    "queued_ids",
    "run_job",
    "storage_key",
    "to_csv",
    "to_parquet",
    "to_public",
]
