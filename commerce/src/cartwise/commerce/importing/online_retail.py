"""Import the UCI Online Retail data (customers, catalog, orders) into the commerce database.

Inputs, detected by path: the by-day CSV folder (``by-day/YYYY-MM-DD.csv``, or a folder holding
``by-day/``), one CSV (``.csv`` or ``.csv.gz``), the Parquet file, or the original XLSX.

What it writes, with Core bulk inserts (no per-row ORM objects):

- **Customers**: one ``user`` per CustomerID, role ``customer``, email
  ``customer-<CustomerID>@online-retail.example`` and the unusable password hash ``"!"`` (no
  password verifies against it, so they cannot log in). ``.example`` is reserved (RFC 2606)
  and, unlike ``.invalid``, passes ``EmailStr`` validation, so the API can show these users.
- **Catalog**: one product and one variant per sellable stock code (SKU = stock code), named,
  priced and categorised by :mod:`cartwise.commerce.catalog.sample` (most frequent
  description, median positive unit price, keyword categories). Codes already present (e.g.
  from ``catalog load-sample``) are reused, not changed.
- **Orders**: one order per invoice, id ``ol-<InvoiceNo>``, lines priced as invoiced, in GBP,
  ``created_at = updated_at = InvoiceDate``. The data's timestamps are UK local wall-clock
  time without a zone; they are stored as if UTC (off by one hour in British Summer Time),
  which keeps days and orderings as published. Normal invoices are ``delivered``. Each
  cancellation invoice (``C...``) becomes its own ``refunded`` order with positive quantities
  and ``refunded_amount = total``; the data does not name the invoice it cancels, so the
  shipping address records ``kind = "cancellation"`` and the C-number only. Guest rows
  (no CustomerID) become orders with no user and the email ``guest@online-retail.example``.
  Each order gets one recorded transition (none → its status, actor ``import``).
  ``country`` is the ISO 3166-1 alpha-2 code (``None`` for "Unspecified", "European
  Community" and "Channel Islands", which have no single code); the full name is kept in
  ``shipping_address["country_name"]``.
- **Not written**: stock levels and stock movements. These orders are history, not live
  reservations, so replaying them against today's stock would be wrong.

Skipped, and counted: exact duplicate rows, non-product codes (postage, fees, manual entries,
vouchers...), zero or negative prices, and non-positive quantities on normal invoices
(adjustments). A second run inserts nothing: customers are keyed by email, variants by SKU and
orders by their id, and inserts use ``ON CONFLICT DO NOTHING``. Orders are committed with
their lines in chunks, so an interrupted run resumes where it stopped.

Data: UCI Machine Learning Repository "Online Retail" (CC BY 4.0), Chen, Sain & Guo (2012).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.models import Product, ProductStatus, Variant
from cartwise.commerce.catalog.sample import (
    LoadSummary,
    categorize,
    ensure_categories,
    free_slug,
    is_product_code,
    nice_name,
    slugify,
)
from cartwise.commerce.customers.models import User
from cartwise.commerce.money import quantize
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus, OrderTransition
from cartwise.platform.auth import Role

CURRENCY = "GBP"
EMAIL_DOMAIN = "online-retail.example"
GUEST_EMAIL = f"guest@{EMAIL_DOMAIN}"
# Not a password: a hash no password verifies against, so imported customers cannot log in.
UNUSABLE_PASSWORD_HASH = "!"  # noqa: S105
ORDER_PREFIX = "ol-"
COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
ORDER_CHUNK = 2_000

# The 38 country names of the data set; None where no single ISO 3166-1 code applies.
COUNTRY_CODES: dict[str, str | None] = {
    "Australia": "AU",
    "Austria": "AT",
    "Bahrain": "BH",
    "Belgium": "BE",
    "Brazil": "BR",
    "Canada": "CA",
    "Channel Islands": None,
    "Cyprus": "CY",
    "Czech Republic": "CZ",
    "Denmark": "DK",
    "EIRE": "IE",
    "European Community": None,
    "Finland": "FI",
    "France": "FR",
    "Germany": "DE",
    "Greece": "GR",
    "Hong Kong": "HK",
    "Iceland": "IS",
    "Israel": "IL",
    "Italy": "IT",
    "Japan": "JP",
    "Lebanon": "LB",
    "Lithuania": "LT",
    "Malta": "MT",
    "Netherlands": "NL",
    "Norway": "NO",
    "Poland": "PL",
    "Portugal": "PT",
    "RSA": "ZA",
    "Saudi Arabia": "SA",
    "Singapore": "SG",
    "Spain": "ES",
    "Sweden": "SE",
    "Switzerland": "CH",
    "USA": "US",
    "United Arab Emirates": "AE",
    "United Kingdom": "GB",
    "Unspecified": None,
}

Progress = Callable[[str, int, int], None]


@dataclass
class ImportSummary:
    """What an import read, skipped (by reason) and created."""

    path: str
    source_format: str = ""
    rows_read: int = 0
    invoices_read: int = 0
    customers_read: int = 0
    stock_codes_read: int = 0
    countries_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    non_product_codes: list[str] = field(default_factory=list)
    categories_created: int = 0
    products_created: int = 0
    products_existing: int = 0
    customers_created: int = 0
    customers_existing: int = 0
    orders_created: int = 0
    refunds_created: int = 0
    orders_existing: int = 0
    lines_created: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(
            self.categories_created
            or self.products_created
            or self.customers_created
            or self.orders_created
            or self.refunds_created
        )


def customer_email(customer_id: int) -> str:
    """The placeholder email of an Online Retail customer."""
    return f"customer-{customer_id}@{EMAIL_DOMAIN}"


def order_id(invoice: str) -> str:
    """The deterministic order id of an invoice number (fits the 32-character column)."""
    return f"{ORDER_PREFIX}{invoice}"[:32]


# ------------------------------------------------------------------------ reading


def detect_format(path: Path) -> str:
    """``by-day``, ``csv``, ``parquet`` or ``xlsx``, from the path alone."""
    name = path.name.lower()
    if path.is_dir():
        return "by-day"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".xlsx", ".xls")):
        return "xlsx"
    raise ValueError(f"cannot tell the format of {path}: expected a folder, .csv[.gz], .parquet")


def resolve_input(path: Path) -> Path:
    """A folder without by-day CSVs (like the published one) means its single Parquet or XLSX."""
    if not path.is_dir():
        return path
    folder = path / "by-day" if (path / "by-day").is_dir() else path
    if any(folder.glob("*.csv")) or any(folder.glob("*.csv.gz")):
        return path
    singles = [
        p for p in sorted(path.iterdir()) if p.suffix.lower() in (".parquet", ".pq", ".xlsx")
    ]
    return singles[0] if len(singles) == 1 else path


def read_frame(path: Path) -> tuple[str, pd.DataFrame]:
    """Read any supported input into one raw frame with the eight Online Retail columns."""
    path = resolve_input(path)
    kind = detect_format(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    text = {"InvoiceNo": str, "StockCode": str, "Description": str, "Country": str}
    if kind == "by-day":
        folder = path / "by-day" if (path / "by-day").is_dir() else path
        files = sorted(folder.glob("*.csv")) + sorted(folder.glob("*.csv.gz"))
        if not files:
            raise FileNotFoundError(f"no .csv files in {folder}")
        frame = pd.concat(
            [pd.read_csv(f, dtype=text, keep_default_na=False) for f in files],
            ignore_index=True,
        )
    elif kind == "csv":
        frame = pd.read_csv(path, dtype=text, keep_default_na=False)
    elif kind == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_excel(path, dtype=text, engine="openpyxl")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {', '.join(missing)}")
    return kind, frame[list(COLUMNS)]


def normalize(raw: pd.DataFrame) -> pd.DataFrame:
    """Typed, trimmed columns; prices in thousandths of a pound; CustomerID as nullable int."""
    df = pd.DataFrame(
        {
            "invoice": raw["InvoiceNo"].astype(str).str.strip().str.upper(),
            "code": raw["StockCode"].astype(str).str.strip(),
            "description": raw["Description"]
            .fillna("")
            .astype(str)
            .str.replace(r"\s+", " ", regex=True)
            .str.strip(),
            "quantity": pd.to_numeric(raw["Quantity"], errors="coerce"),
            "date": pd.to_datetime(raw["InvoiceDate"], errors="coerce"),
            "price": pd.to_numeric(raw["UnitPrice"], errors="coerce"),
            "customer": pd.to_numeric(raw["CustomerID"].replace("", None), errors="coerce").round(),
            "country": raw["Country"].fillna("").astype(str).str.strip(),
        }
    )
    df["customer"] = df["customer"].astype("Int64")
    df["country"] = df["country"].mask(df["country"] == "", "Unspecified")
    if getattr(df["date"].dt, "tz", None) is not None:
        df["date"] = df["date"].dt.tz_convert("UTC").dt.tz_localize(None)
    return df


def clean(df: pd.DataFrame, summary: ImportSummary) -> pd.DataFrame:
    """Drop and count the dirt; returns the kept rows with ``cancel``, ``qty`` and ``milli``."""
    summary.rows_read = len(df)
    summary.invoices_read = int(df["invoice"].nunique())
    summary.customers_read = int(df["customer"].nunique())
    summary.stock_codes_read = int(df["code"].nunique())
    summary.countries_read = int(df["country"].nunique())
    skipped: dict[str, int] = {}

    def drop(mask: pd.Series[bool], reason: str) -> None:
        skipped[reason] = int(mask.sum())

    bad = df["quantity"].isna() | df["price"].isna() | df["date"].isna() | (df["invoice"] == "")
    drop(bad, "unreadable rows")
    df = df[~bad]
    dup = df.duplicated(keep="first")
    drop(dup, "exact duplicate rows")
    df = df[~dup]
    codes = pd.Series(df["code"].unique())
    product = dict(zip(codes, codes.map(is_product_code), strict=True))
    is_product = df["code"].map(product).astype(bool)
    drop(~is_product, "non-product codes (postage, fees, adjustments, vouchers)")
    summary.non_product_codes = sorted(set(df.loc[~is_product, "code"]))
    df = df[is_product]
    free = df["price"] <= 0
    drop(free, "zero or negative unit price")
    df = df[~free]
    cancel = df["invoice"].str.startswith("C")
    adjustment = ~cancel & (df["quantity"] <= 0)
    drop(adjustment, "non-positive quantity on a normal invoice (adjustment)")
    df = df[~adjustment].copy()
    zero = df["quantity"] == 0
    drop(zero, "zero quantity on a cancellation")
    df = df[~zero].copy()
    df["cancel"] = df["invoice"].str.startswith("C")
    df["qty"] = df["quantity"].abs().astype("int64")
    df["milli"] = (df["price"] * 1000).round().astype("int64")
    summary.skipped = {k: v for k, v in skipped.items() if v}
    return df


@dataclass(frozen=True)
class CatalogItem:
    """One stock code to sell: name, median price and category path."""

    sku: str
    name: str
    price: Decimal
    category_path: tuple[str, ...]


def _code_stats(rows: pd.DataFrame) -> dict[str, tuple[str, Decimal]]:
    named = rows[rows["description"] != ""]
    counts = named.groupby(["code", "description"]).size().reset_index(name="n")
    # Most frequent description; ties broken alphabetically (as sample.read_sample does).
    counts = counts.sort_values(["code", "n", "description"], ascending=[True, False, True])
    best = dict(counts.drop_duplicates("code")[["code", "description"]].itertuples(index=False))
    medians = rows.groupby("code")["milli"].median()
    out: dict[str, tuple[str, Decimal]] = {}
    for code, median in medians.items():
        price = quantize(Decimal(repr(float(median))) / 1000)
        out[str(code)] = (str(best.get(code, "")), price)
    return out


def catalog_items(df: pd.DataFrame) -> list[CatalogItem]:
    """One item per kept stock code: from its sales, or its cancellations if it never sold."""
    stats = _code_stats(df[~df["cancel"]])
    for code, value in _code_stats(df[df["cancel"]]).items():
        stats.setdefault(code, value)
    items = []
    for code in sorted(stats):
        description, price = stats[code]
        name = (nice_name(description) if description else f"Stock Code {code}")[:200]
        items.append(CatalogItem(code, name, price, categorize(name)))
    return items


# ------------------------------------------------------------------------ writing


def _insert(session: Session, table: Table, conflict: Sequence[str] | None = None) -> Insert:
    dialect = session.get_bind().dialect.name
    if conflict is None:
        return insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    return insert(table).prefix_with("IGNORE")  # pragma: no cover - other databases


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _write_catalog(
    session: Session, items: list[CatalogItem], summary: ImportSummary
) -> dict[str, tuple[int, int, str]]:
    existing = set(session.exec(select(Variant.sku)).all())
    new = [item for item in items if item.sku not in existing]
    summary.products_existing = len(items) - len(new)
    if new:
        counter = LoadSummary(path=summary.path)
        category_ids = ensure_categories(session, {i.category_path for i in new}, counter)
        summary.categories_created = counter.categories_created
        taken = set(session.exec(select(Product.slug)).all())
        now = datetime.now(UTC)
        product_rows = [
            {
                "name": item.name,
                "slug": free_slug(f"{slugify(item.name)}-{item.sku.lower()}"[:200], taken),
                "description": (
                    f"{item.name}. Stock code {item.sku} of the UCI Online Retail data (CC BY 4.0)."
                ),
                "category_id": category_ids[item.category_path],
                "status": ProductStatus.active.value,
                "created_at": now,
                "updated_at": now,
            }
            for item in new
        ]
        product_table = _table(Product)
        ids: list[int] = []
        for chunk in _chunks(product_rows, 1000):
            stmt = insert(product_table).returning(product_table.c.id, sort_by_parameter_order=True)
            ids.extend(int(r[0]) for r in session.execute(stmt, list(chunk)))
        variant_rows = [
            {
                "product_id": pid,
                "sku": item.sku,
                "attributes": {"stock_code": item.sku},
                "price": item.price,
                "currency": CURRENCY,
                "is_active": True,
            }
            for item, pid in zip(new, ids, strict=True)
        ]
        session.execute(_insert(session, _table(Variant), ["sku"]), variant_rows)
        summary.products_created = len(new)
        session.commit()
    wanted = {item.sku for item in items}
    found: dict[str, tuple[int, int, str]] = {}
    rows = session.execute(
        select(Variant.sku, Variant.id, Variant.product_id, Product.name).join(
            Product, col(Product.id) == col(Variant.product_id)
        )
    )
    for sku, vid, pid, name in rows:
        if sku in wanted:
            found[sku] = (int(vid), int(pid), str(name))
    return found


def _write_customers(session: Session, df: pd.DataFrame, summary: ImportSummary) -> dict[int, int]:
    known = df[df["customer"].notna()]
    first = known.groupby("customer")["date"].min()
    emails = {int(c): customer_email(int(c)) for c in first.index}
    existing = {
        str(e)
        for e in session.exec(select(User.email).where(col(User.email).like(f"%@{EMAIL_DOMAIN}")))
    }
    rows = [
        {
            "email": emails[int(c)],
            "full_name": f"Online Retail customer {int(c)}",
            "hashed_password": UNUSABLE_PASSWORD_HASH,
            "role": Role.customer.value,
            "is_active": True,
            "created_at": when.to_pydatetime().replace(tzinfo=UTC),
        }
        for c, when in first.items()
        if emails[int(c)] not in existing
    ]
    summary.customers_existing = len(emails) - len(rows)
    for chunk in _chunks(rows, 5000):
        session.execute(_insert(session, _table(User), ["email"]), list(chunk))
    summary.customers_created = len(rows)
    session.commit()
    by_email = {email: cid for cid, email in emails.items()}
    ids: dict[int, int] = {}
    for uid, email in session.execute(
        select(User.id, User.email).where(col(User.email).like(f"%@{EMAIL_DOMAIN}"))
    ):
        cid = by_email.get(str(email))
        if cid is not None:
            ids[cid] = int(uid)
    return ids


def _write_orders(
    session: Session,
    df: pd.DataFrame,
    variants: dict[str, tuple[int, int, str]],
    users: dict[int, int],
    summary: ImportSummary,
    progress: Progress | None,
) -> None:
    df = df.assign(
        cents=df["milli"].add(5).floordiv(10),
        line_cents=(df["qty"] * df["milli"]).add(5).floordiv(10),
    )
    heads = df.groupby("invoice", sort=True).agg(
        date=("date", "min"),
        customer=("customer", "first"),
        country=("country", "first"),
        cancel=("cancel", "first"),
        cents=("line_cents", "sum"),
    )
    existing = {
        str(i) for i in session.exec(select(Order.id).where(col(Order.id).like(f"{ORDER_PREFIX}%")))
    }
    ids = [order_id(str(inv)) for inv in heads.index]
    is_new = [oid not in existing for oid in ids]
    summary.orders_existing = len(ids) - sum(is_new)
    heads = heads[is_new]
    lines = df[df["invoice"].isin(heads.index)].sort_values("invoice", kind="stable")
    order_table, line_table = _table(Order), _table(OrderLine)
    order_stmt = _insert(session, order_table, ["id"])
    line_stmt = insert(line_table)
    transition_stmt = insert(_table(OrderTransition))
    invoices = [str(i) for i in heads.index]
    head_cols = {name: heads[name].tolist() for name in ("date", "customer", "country", "cancel")}
    head_cents = heads["cents"].tolist()
    total = len(invoices)
    if progress:
        progress("orders", 0, total)
    line_groups = lines.groupby("invoice", sort=True).indices
    line_cols = {
        name: lines[name].tolist() for name in ("code", "qty", "cents", "line_cents", "invoice")
    }
    for start in range(0, total, ORDER_CHUNK):
        order_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        transition_rows: list[dict[str, Any]] = []
        for h in range(start, min(start + ORDER_CHUNK, total)):
            invoice = invoices[h]
            oid = order_id(invoice)
            cancel = bool(head_cols["cancel"][h])
            raw_customer = head_cols["customer"][h]
            customer = None if pd.isna(raw_customer) else int(raw_customer)
            user_id = None if customer is None else users.get(customer)
            email = GUEST_EMAIL if customer is None else customer_email(customer)
            when = pd.Timestamp(head_cols["date"][h]).to_pydatetime().replace(tzinfo=UTC)
            amount = Decimal(int(head_cents[h])).scaleb(-2)
            country_name = str(head_cols["country"][h])
            address: dict[str, Any] = {
                "source": "uci-online-retail",
                "invoice": str(invoice),
                "kind": "cancellation" if cancel else "sale",
                "country_name": country_name,
            }
            if customer is not None:
                address["customer_id"] = customer
            order_rows.append(
                {
                    "id": oid,
                    "user_id": user_id,
                    "cart_id": None,
                    "email": email,
                    "status": (OrderStatus.refunded if cancel else OrderStatus.delivered).value,
                    "currency": CURRENCY,
                    "subtotal": amount,
                    "discount": Decimal("0"),
                    "shipping": Decimal("0"),
                    "tax": Decimal("0"),
                    "total": amount,
                    "refunded_amount": amount if cancel else Decimal("0"),
                    "voucher_code": None,
                    "shipping_address": address,
                    "country": COUNTRY_CODES.get(country_name),
                    "payment_provider": "manual",
                    "idempotency_scope": None,
                    "idempotency_key": None,
                    "request_hash": None,
                    "created_at": when,
                    "updated_at": when,
                }
            )
            transition_rows.append(
                {
                    "order_id": oid,
                    "from_status": None,
                    "to_status": order_rows[-1]["status"],
                    "actor_id": None,
                    "actor": "import",
                    "reason": f"UCI Online Retail invoice {invoice}",
                    "created_at": when,
                }
            )
            for i in line_groups[invoice]:
                sku = line_cols["code"][i]
                vid, pid, name = variants[sku]
                line_rows.append(
                    {
                        "order_id": oid,
                        "variant_id": vid,
                        "product_id": pid,
                        "sku": sku,
                        "product_name": name,
                        "quantity": line_cols["qty"][i],
                        "unit_price": Decimal(line_cols["cents"][i]).scaleb(-2),
                        "line_total": Decimal(line_cols["line_cents"][i]).scaleb(-2),
                    }
                )
            if cancel:
                summary.refunds_created += 1
            else:
                summary.orders_created += 1
        session.execute(order_stmt, order_rows)
        session.execute(line_stmt, line_rows)
        session.execute(transition_stmt, transition_rows)
        session.commit()
        summary.lines_created += len(line_rows)
        done = min(start + ORDER_CHUNK, total)
        if progress:
            progress("orders", done, total)


def import_online_retail(
    *, session: Session, path: Path | str, progress: Progress | None = None
) -> ImportSummary:
    """Import customers, catalog and orders from Online Retail data; a second run adds nothing.

    ``progress(stage, done, total)`` reports each stage. Commits as it goes.
    """
    source = Path(path)
    summary = ImportSummary(path=str(source))
    if progress:
        progress("reading", 0, 1)
    summary.source_format, raw = read_frame(source)
    df = clean(normalize(raw), summary)
    del raw
    if progress:
        progress("reading", 1, 1)
    try:
        items = catalog_items(df)
        if progress:
            progress("catalog", 0, 1)
        variants = _write_catalog(session, items, summary)
        if progress:
            progress("catalog", 1, 1)
            progress("customers", 0, 1)
        users = _write_customers(session, df, summary)
        if progress:
            progress("customers", 1, 1)
        _write_orders(session, df, variants, users, summary, progress)
    except Exception:
        session.rollback()
        raise
    return summary


__all__ = [
    "COUNTRY_CODES",
    "GUEST_EMAIL",
    "ImportSummary",
    "customer_email",
    "detect_format",
    "import_online_retail",
    "order_id",
]
