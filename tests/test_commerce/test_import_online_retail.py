"""The UCI Online Retail importer: counts, dirt, cancellations, guests, formats, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner

from cartwise.commerce.catalog import sample
from cartwise.commerce.catalog.models import Product, Variant
from cartwise.commerce.catalog.sample import is_product_code
from cartwise.commerce.customers.models import User
from cartwise.commerce.importing import online_retail as ol
from cartwise.commerce.inventory.models import StockLevel, StockMovement
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus, OrderTransition

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "online_retail_sample" / sample.SAMPLE_FILE
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
DIRTY_ROWS = [
    # a normal invoice of a known customer, with a postage line and an exact duplicate
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,"
    "United Kingdom",
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,"
    "United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536365,POST,POSTAGE,1,2010-12-01 08:26:00,18.00,17850.0,United Kingdom",
    # a guest invoice in EIRE; the same code described differently (most frequent wins)
    "536366,71053,WHITE METAL LANTERN,2,2010-12-02 09:00:00,3.00,,EIRE",
    "536366,71053,WHITE  METAL LANTERN ,1,2010-12-02 09:00:00,3.39,,EIRE",
    "536367,71053,LANTERN WHITE,1,2010-12-02 10:00:00,4.00,12345.0,France",
    # dirt: zero price, a negative adjustment on a normal invoice, fees and vouchers
    "536368,22139,,56,2010-12-03 11:00:00,0,,United Kingdom",
    "536369,21275,damaged,-20,2010-12-03 11:30:00,1.25,,United Kingdom",
    "536370,AMAZONFEE,AMAZON FEE,1,2010-12-03 12:00:00,13541.33,,United Kingdom",
    "536371,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2010-12-03 12:10:00,17.02,,"
    "United Kingdom",
    # a cancellation of the customer's lantern
    "C536379,71053,WHITE METAL LANTERN,-2,2010-12-04 09:41:00,3.39,17850.0,United Kingdom",
]


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def _expected(path: Path) -> dict[str, int]:
    """What the file should yield, computed with plain pandas (not the importer's code)."""
    df = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "Description": str})
    df = df.drop_duplicates()
    df = df[df["StockCode"].map(is_product_code)]
    df = df[df["UnitPrice"] > 0]
    cancel = df["InvoiceNo"].str.startswith("C")
    df = df[cancel | (df["Quantity"] > 0)]
    cancel = df["InvoiceNo"].str.startswith("C")
    guest = df["CustomerID"].isna()
    return {
        "customers": int(df["CustomerID"].nunique()),
        "products": int(df["StockCode"].nunique()),
        "delivered": int(df.loc[~cancel, "InvoiceNo"].nunique()),
        "refunded": int(df.loc[cancel, "InvoiceNo"].nunique()),
        "lines": len(df),
        "guest_orders": int(df.loc[guest, "InvoiceNo"].nunique()),
        "units": int(df["Quantity"].abs().sum()),
    }


def _counts(session: Session) -> dict[str, int]:
    return {
        "customers": _count(session, User, col(User.email).like("%@online-retail.example")),
        "products": _count(session, Variant),
        "delivered": _count(session, Order, col(Order.status) == OrderStatus.delivered),
        "refunded": _count(session, Order, col(Order.status) == OrderStatus.refunded),
        "lines": _count(session, OrderLine),
        "guest_orders": _count(session, Order, col(Order.user_id).is_(None)),
        "units": int(session.exec(select(func.sum(OrderLine.quantity))).one() or 0),
    }


def test_committed_sample_imports_what_pandas_computes_once(session: Session) -> None:
    expected = _expected(SAMPLE)
    summary = ol.import_online_retail(session=session, path=SAMPLE)
    assert summary.source_format == "csv"
    assert summary.rows_read == 84_711
    assert summary.skipped["exact duplicate rows"] == 1_368
    assert summary.changed
    assert _counts(session) == expected
    assert summary.customers_created == expected["customers"]
    assert summary.products_created == expected["products"]
    assert summary.orders_created == expected["delivered"]
    assert summary.refunds_created == expected["refunded"]
    assert summary.lines_created == expected["lines"]

    # Historical timestamps are kept, order totals add up, stock is left alone.
    first = session.get(Order, "ol-573744")
    assert first is not None
    assert first.created_at == datetime(2011, 11, 1, 8, 16, tzinfo=UTC)
    assert first.status == OrderStatus.delivered
    assert first.country == "GB"
    assert first.shipping_address["country_name"] == "United Kingdom"
    line_sum = session.exec(
        select(func.sum(OrderLine.line_total)).where(OrderLine.order_id == first.id)
    ).one()
    assert Decimal(str(line_sum)) == first.total == first.subtotal
    assert _count(session, StockLevel) == 0
    assert _count(session, StockMovement) == 0
    user = session.exec(select(User).where(User.email == "customer-17733@online-retail.example"))
    customer = user.one()
    assert customer.hashed_password == "!"
    assert first.user_id == customer.id

    again = ol.import_online_retail(session=session, path=SAMPLE)
    assert not again.changed
    assert again.lines_created == 0
    assert again.orders_existing == expected["delivered"] + expected["refunded"]
    assert again.products_existing == expected["products"]
    assert _counts(session) == expected


def test_dirt_guests_and_cancellations(session: Session, tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "dirty.csv", DIRTY_ROWS)
    seen: list[tuple[str, int, int]] = []
    summary = ol.import_online_retail(
        session=session, path=path, progress=lambda *a: seen.append(a)
    )
    assert {stage for stage, _, _ in seen} == {"reading", "catalog", "customers", "orders"}
    assert seen[-1] == ("orders", 4, 4)
    assert summary.rows_read == 12
    assert summary.skipped == {
        "exact duplicate rows": 1,
        "non-product codes (postage, fees, adjustments, vouchers)": 3,
        "zero or negative unit price": 1,
        "non-positive quantity on a normal invoice (adjustment)": 1,
    }
    assert summary.non_product_codes == ["AMAZONFEE", "POST", "gift_0001_20"]
    assert (summary.products_created, summary.customers_created) == (2, 2)
    assert (summary.orders_created, summary.refunds_created, summary.lines_created) == (3, 1, 6)

    lantern = session.exec(select(Variant).where(Variant.sku == "71053")).one()
    product = session.get(Product, lantern.product_id)
    assert product is not None
    # "WHITE METAL LANTERN" (3 sale rows after trimming) beats "LANTERN WHITE"; the median
    # of 3.00, 3.39, 3.39 and 4.00 is 3.39.
    assert product.name == "White Metal Lantern"
    assert lantern.price == Decimal("3.39")

    guest = session.get(Order, "ol-536366")
    assert guest is not None
    assert guest.user_id is None
    assert guest.email == ol.GUEST_EMAIL
    assert guest.country == "IE"
    assert guest.total == Decimal("9.39")

    refund = session.get(Order, "ol-C536379")
    assert refund is not None
    assert refund.status == OrderStatus.refunded
    assert refund.total == refund.refunded_amount == Decimal("6.78")
    assert refund.shipping_address["kind"] == "cancellation"
    assert refund.created_at == datetime(2010, 12, 4, 9, 41, tzinfo=UTC)
    transition = session.exec(
        select(OrderTransition).where(OrderTransition.order_id == refund.id)
    ).one()
    assert (transition.from_status, transition.to_status) == (None, OrderStatus.refunded)
    assert transition.actor == "import"
    lines = session.exec(select(OrderLine).where(OrderLine.order_id == refund.id)).all()
    assert [(line.sku, line.quantity, line.line_total) for line in lines] == [
        ("71053", 2, Decimal("6.78"))
    ]
    sale = session.get(Order, "ol-536365")
    assert sale is not None
    assert sale.user_id == refund.user_id is not None
    assert sale.total == Decimal("35.64")

    assert not ol.import_online_retail(session=session, path=path).changed
    assert _count(session, OrderLine) == 6
    assert _count(session, OrderTransition) == 4


@pytest.mark.parametrize("kind", ["by-day", "csv.gz", "parquet", "xlsx"])
def test_every_input_format_gives_the_same_import(
    session: Session, tmp_path: Path, kind: str
) -> None:
    source = _write_csv(tmp_path / "all.csv", DIRTY_ROWS)
    frame = pd.read_csv(source, dtype={"InvoiceNo": str, "StockCode": str})
    if kind == "by-day":
        folder = tmp_path / "retail" / "by-day"
        folder.mkdir(parents=True)
        day = frame["InvoiceDate"].str[:10]
        for date, rows in frame.groupby(day):
            rows.to_csv(folder / f"{date}.csv", index=False)
        path = tmp_path / "retail"
    elif kind == "csv.gz":
        path = tmp_path / "all.csv.gz"
        frame.to_csv(path, index=False, compression="gzip")
    elif kind == "parquet":
        frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])
        path = tmp_path / "all.parquet"
        frame.to_parquet(path)
    else:
        frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])
        path = tmp_path / "all.xlsx"
        frame.to_excel(path, index=False)
    summary = ol.import_online_retail(session=session, path=path)
    assert summary.source_format == kind.removesuffix(".gz")
    assert summary.rows_read == 12
    assert sum(summary.skipped.values()) == 6
    assert (summary.orders_created, summary.refunds_created, summary.lines_created) == (3, 1, 6)
    assert summary.customers_created == 2
    refund = session.get(Order, "ol-C536379")
    assert refund is not None
    assert refund.created_at == datetime(2010, 12, 4, 9, 41, tzinfo=UTC)


def test_unknown_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        ol.detect_format(tmp_path / "data.json")
    with pytest.raises(FileNotFoundError):
        ol.read_frame(tmp_path / "missing.parquet")
    assert len(ol.COUNTRY_CODES) == 38
    assert ol.order_id("C" + "9" * 40) == ("ol-C" + "9" * 40)[:32]


def test_cli_imports_and_prints_a_summary(cli_env: dict[str, str], tmp_path: Path) -> None:
    from cartwise.pipelines.cli import app
    from cartwise.platform.settings import get_settings

    path = _write_csv(tmp_path / "dirty.csv", DIRTY_ROWS)
    runner = CliRunner()
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade"], env=cli_env).exit_code == 0
    get_settings.cache_clear()
    result = runner.invoke(app, ["data", "import-online-retail", str(path)], env=cli_env)
    assert result.exit_code == 0, result.output
    for needle in ("exact duplicate rows", "non-product codes", "customers", "order lines"):
        assert needle in result.output
    get_settings.cache_clear()
    bad = runner.invoke(
        app, ["data", "import-online-retail", str(tmp_path / "x.json")], env=cli_env
    )
    assert bad.exit_code == 2


def test_data_help_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cartwise.pipelines.cli import app\n"
        "try:\n"
        "    app(['data', 'import-online-retail', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('LOADED=' + ','.join(m for m in ('pandas', 'sqlalchemy', 'sqlmodel') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "LOADED=\n" in out.stdout, out.stdout[-500:]


def test_a_dataset_folder_means_its_single_parquet_file(tmp_path: Path) -> None:
    from cartwise.commerce.importing.online_retail import resolve_input

    published = tmp_path / "online_retail"
    published.mkdir()
    (published / "online_retail_uci_by_day.tar.gz").write_bytes(b"")
    (published / "online_retail.parquet").write_bytes(b"")
    assert resolve_input(published) == published / "online_retail.parquet"
    by_day = tmp_path / "by-day"
    by_day.mkdir()
    (by_day / "2011-11-01.csv").write_text("x")
    assert resolve_input(tmp_path) == tmp_path
    assert resolve_input(published / "online_retail.parquet") == published / "online_retail.parquet"
