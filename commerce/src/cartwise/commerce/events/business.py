"""Staff business analytics (sales, products, funnel, customers), computed in SQL.

Every number is one SQL statement over the order and event tables (SQLAlchemy Core, no rows
pulled into Python beyond the result), spelled so SQLite and PostgreSQL give the same answer.

Definitions, in one place:

- **Sales** are orders whose status is in :data:`SALE_STATUSES` (paid, fulfilled, shipped,
  delivered). Orders awaiting payment or fraud review have not sold anything yet, and cancelled
  or fully refunded orders are not sales; a partially refunded order stays a sale (its refunded
  amount is reported beside the revenue). An order counts on the UTC day it was placed
  (``created_at``), the same instant the range ``[start, end)`` filters on.
- **Revenue** is merchandise revenue: the sum of order line totals, before order-level
  discounts, shipping and tax, so that the breakdowns by day, category and country all add up
  to the same total. Amounts are ``Decimal`` per currency (never summed across currencies).
- **Units** are the quantities of the order lines.
- **Conversion** and the **funnel** come from the shopper event log (``received_at`` in the
  range): a session "reached" a step when it has an event of that step and of every earlier
  step, in any order, within the range. Users are the signed-in users of those sessions.
- **Customers** are keyed by user id, or by email for guest orders. A customer is *new* in the
  range when their first sale ever falls inside it, *returning* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    select,
    text,
)
from sqlmodel import Session

from cartwise.commerce.catalog.models import Category, Product
from cartwise.commerce.events.models import EventType, ShopperEvent
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=3 * 366)
SALE_STATUSES: tuple[OrderStatus, ...] = (
    OrderStatus.paid,
    OrderStatus.fulfilled,
    OrderStatus.shipped,
    OrderStatus.delivered,
)
FUNNEL_STEPS: tuple[EventType, ...] = (EventType.view, EventType.add_to_cart, EventType.purchase)
UNCATEGORISED = "Uncategorised"
CENT = Decimal("0.01")
WORK_MEM = "64MB"

_order: Table = Order.__table__  # type: ignore[attr-defined]
_line: Table = OrderLine.__table__  # type: ignore[attr-defined]
_product: Table = Product.__table__  # type: ignore[attr-defined]
_category: Table = Category.__table__  # type: ignore[attr-defined]
_event: Table = ShopperEvent.__table__  # type: ignore[attr-defined]


# ------------------------------------------------------------------ dialect pieces


def _dialect(session: Session) -> str:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # For this transaction only (SET LOCAL ends with it): room to hash the half-million
        # line groups in memory instead of spilling to disk, and no JIT, whose compile time
        # (~0.1 s) these short scans never win back.
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
        # A staff report must never hold a core for hours if a plan goes wrong; the client
        # gets an error instead (an early version of these queries once ran for 2.5 h).
        session.execute(text("SET LOCAL statement_timeout = '60s'"))
    return dialect


def day_of(dialect: str, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, as ``YYYY-MM-DD`` text."""
    if dialect == "sqlite":
        # SQLite keeps UTC timestamps as naive 'YYYY-MM-DD HH:MM:SS.ffffff' text.
        return func.substr(column, 1, 10)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def month_of(dialect: str, column: Any) -> ColumnElement[Any]:
    """The UTC month of a timestamp column, as ``YYYY-MM`` text."""
    if dialect == "sqlite":
        return func.substr(column, 1, 7)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM")


def month_index(dialect: str, column: Any) -> ColumnElement[Any]:
    """``year * 12 + month`` of a timestamp (UTC), to count months between two instants."""
    if dialect == "sqlite":
        return cast(func.substr(column, 1, 4), Integer) * 12 + cast(
            func.substr(column, 6, 2), Integer
        )
    utc = func.timezone("UTC", column)
    return cast(func.extract("year", utc), Integer) * 12 + cast(func.extract("month", utc), Integer)


def money_sum(dialect: str, column: Any) -> ColumnElement[Any]:
    """An exact sum of a money column (SQLite stores NUMERIC as REAL: sum whole pennies)."""
    if dialect == "sqlite":
        return func.coalesce(func.sum(func.round(column * 100)), 0)
    return func.coalesce(func.sum(column), 0)


def to_money(dialect: str, value: Any) -> Decimal:
    """A summed money value from :func:`money_sum` as a two-place ``Decimal``."""
    if value is None:
        return Decimal("0.00")
    if dialect == "sqlite":
        return Decimal(round(float(value))).scaleb(-2).quantize(CENT)
    return Decimal(value).quantize(CENT)


def customer_key() -> ColumnElement[Any]:
    """Who placed an order: ``u:<user id>``, or ``e:<email>`` for guests."""
    return case(
        (_order.c.user_id.is_not(None), literal("u:") + cast(_order.c.user_id, String)),
        else_=literal("e:") + func.lower(_order.c.email),
    )


def sales_filter(start: datetime, end: datetime) -> ColumnElement[bool]:
    """Orders that count as sales, placed in [start, end)."""
    return and_(
        _order.c.status.in_([s.value for s in SALE_STATUSES]),
        _order.c.created_at >= start,
        _order.c.created_at < end,
    )


def order_values(dialect: str, start: datetime, end: datetime) -> Any:
    """Per sold order in [start, end): merchandise revenue and units, its lines summed.

    Grouped by the order id alone (a narrow hash), and joined to the order afterwards: grouping
    the joined rows by every order column needed later is several times slower.
    """
    sold = select(_order.c.id).where(sales_filter(start, end))
    return (
        select(
            _line.c.order_id,
            money_sum(dialect, _line.c.line_total).label("revenue"),
            func.sum(_line.c.quantity).label("units"),
        )
        .where(_line.c.order_id.in_(sold))
        .group_by(_line.c.order_id)
        .subquery("order_values")
    )


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# ------------------------------------------------------------------ sales


@dataclass
class _Sum:
    revenue: Decimal = Decimal("0.00")
    orders: int = 0
    units: int = 0
    refunded: Decimal = Decimal("0.00")

    def add(self, other: _Sum) -> None:
        self.revenue += other.revenue
        self.orders += other.orders
        self.units += other.units
        self.refunded += other.refunded


class SalesTotals(BaseModel):
    """Revenue, orders and units in one currency over the whole range."""

    currency: str
    revenue: Decimal
    orders: int
    units: int
    refunded: Decimal
    average_order_value: Decimal | None


class DaySales(BaseModel):
    """One UTC day's sales in one currency."""

    day: date
    currency: str
    revenue: Decimal
    orders: int
    units: int


class CategorySales(BaseModel):
    """One category's sales in one currency (orders: orders with a line of it)."""

    category_id: int | None
    category: str
    currency: str
    revenue: Decimal
    orders: int
    units: int


class CountrySales(BaseModel):
    """One shipping country's sales in one currency (``None``: unknown or not one country)."""

    country: str | None
    currency: str
    revenue: Decimal
    orders: int
    units: int


class SalesAnalytics(BaseModel):
    """Sales over [start, end) by day, category and country."""

    start: datetime
    end: datetime
    statuses: list[str]
    totals: list[SalesTotals]
    by_day: list[DaySales]
    by_category: list[CategorySales]
    by_country: list[CountrySales]


def sales(*, session: Session, start: datetime, end: datetime) -> SalesAnalytics:
    """Revenue, orders and units over [start, end): totals, by day, by category, by country."""
    d = _dialect(session)
    where = sales_filter(start, end)
    joined = _line.join(_order, _order.c.id == _line.c.order_id)
    # Lines are summed per order first: the outer groups then count orders with count(*),
    # which hashes, where count(DISTINCT order id) over the lines would sort half a million rows.
    values = order_values(d, start, end)
    per_order = (
        select(
            _order.c.id,
            day_of(d, _order.c.created_at).label("day"),
            _order.c.country,
            _order.c.currency,
            _order.c.refunded_amount,
            values.c.revenue,
            values.c.units,
        )
        .select_from(_order.join(values, values.c.order_id == _order.c.id))
        .subquery("per_order")
    )
    cells = session.execute(
        select(
            per_order.c.day,
            per_order.c.country,
            per_order.c.currency,
            func.sum(per_order.c.revenue),
            func.count(),
            func.sum(per_order.c.units),
            money_sum(d, per_order.c.refunded_amount),
        )
        .group_by(per_order.c.day, per_order.c.country, per_order.c.currency)
        .order_by(per_order.c.day, per_order.c.currency, per_order.c.country)
    ).all()
    # Each order falls on one day in one country, so the day-by-country cells add up exactly
    # to the per-day, per-country and total figures.
    days: dict[tuple[str, str], _Sum] = {}
    countries: dict[tuple[str | None, str], _Sum] = {}
    totals_acc: dict[str, _Sum] = {}
    for dy, country, cur, rev, n, u, refunded in cells:
        cell = _Sum(to_money(d, rev), int(n), int(u or 0), to_money(d, refunded))
        days.setdefault((str(dy), str(cur)), _Sum()).add(cell)
        countries.setdefault((None if country is None else str(country), str(cur)), _Sum()).add(
            cell
        )
        totals_acc.setdefault(str(cur), _Sum()).add(cell)
    totals = [
        SalesTotals(
            currency=cur,
            revenue=t.revenue,
            orders=t.orders,
            units=t.units,
            refunded=t.refunded,
            average_order_value=(t.revenue / t.orders).quantize(CENT) if t.orders else None,
        )
        for cur, t in sorted(totals_acc.items())
    ]
    by_day = [
        DaySales(
            day=date.fromisoformat(dy),
            currency=cur,
            revenue=t.revenue,
            orders=t.orders,
            units=t.units,
        )
        for (dy, cur), t in sorted(days.items())
    ]
    by_country = [
        CountrySales(country=c, currency=cur, revenue=t.revenue, orders=t.orders, units=t.units)
        for (c, cur), t in countries.items()
    ]

    per_order_category = (
        select(
            _product.c.category_id,
            _order.c.currency,
            money_sum(d, _line.c.line_total).label("revenue"),
            func.sum(_line.c.quantity).label("units"),
        )
        .select_from(joined.outerjoin(_product, _product.c.id == _line.c.product_id))
        .where(where)
        .group_by(_order.c.id, _product.c.category_id, _order.c.currency)
        .subquery("per_order_category")
    )
    revenue = func.sum(per_order_category.c.revenue)
    by_category = [
        CategorySales(
            category_id=None if cid is None else int(cid),
            category=str(name) if name is not None else UNCATEGORISED,
            currency=str(cur),
            revenue=to_money(d, rev),
            orders=int(n),
            units=int(u or 0),
        )
        for cid, name, cur, rev, n, u in session.execute(
            select(
                per_order_category.c.category_id,
                _category.c.name,
                per_order_category.c.currency,
                revenue,
                func.count(),
                func.sum(per_order_category.c.units),
            )
            .select_from(
                per_order_category.outerjoin(
                    _category, _category.c.id == per_order_category.c.category_id
                )
            )
            .group_by(
                per_order_category.c.category_id, _category.c.name, per_order_category.c.currency
            )
        )
    ]
    # Ties in revenue come back in either order on the two databases; fix one order here.
    by_category.sort(key=lambda r: (-r.revenue, r.currency, r.category, r.category_id or 0))
    by_country.sort(key=lambda r: (-r.revenue, r.currency, r.country or ""))
    return SalesAnalytics(
        start=start,
        end=end,
        statuses=[s.value for s in SALE_STATUSES],
        totals=totals,
        by_day=by_day,
        by_category=by_category,
        by_country=by_country,
    )


# ------------------------------------------------------------------ products


class TopSeller(BaseModel):
    """A product's sales in one currency over the range."""

    product_id: int | None
    name: str
    currency: str
    units: int
    revenue: Decimal
    order_lines: int


class ProductConversion(BaseModel):
    """Sessions that viewed a product, and how many of them bought it."""

    product_id: int
    name: str | None
    views: int
    viewing_sessions: int
    purchasing_sessions: int
    converted_sessions: int
    conversion_rate: float | None


class ProductAnalytics(BaseModel):
    """Top sellers by units or revenue, and view → purchase conversion per product."""

    start: datetime
    end: datetime
    order_by: str
    top_sellers: list[TopSeller]
    conversion: list[ProductConversion]


def top_sellers(
    *, session: Session, start: datetime, end: datetime, limit: int = 20, by: str = "units"
) -> list[TopSeller]:
    """The best-selling products over [start, end) by ``units`` or ``revenue``."""
    d = _dialect(session)
    revenue = money_sum(d, _line.c.line_total).label("revenue")
    units = func.sum(_line.c.quantity).label("units")
    # A line of a deleted product keeps its name; group by id and take one name.
    name = func.max(_line.c.product_name).label("name")
    first, second = (units, revenue) if by == "units" else (revenue, units)
    # count(*) of lines, not count(DISTINCT order): the distinct count sorts half a million
    # rows on the full data (4x slower), and an order seldom has two lines of one product.
    rows = session.execute(
        select(_line.c.product_id, _order.c.currency, name, units, revenue, func.count())
        .select_from(_line.join(_order, _order.c.id == _line.c.order_id))
        .where(sales_filter(start, end))
        .group_by(_line.c.product_id, _order.c.currency)
        .order_by(first.desc(), second.desc(), _line.c.product_id, _order.c.currency)
        .limit(limit)
    )
    return [
        TopSeller(
            product_id=None if pid is None else int(pid),
            name=str(nm),
            currency=str(cur),
            units=int(u),
            revenue=to_money(d, rev),
            order_lines=int(n),
        )
        for pid, cur, nm, u, rev, n in rows
    ]


def product_conversion(
    *, session: Session, start: datetime, end: datetime, limit: int = 20
) -> list[ProductConversion]:
    """Per product: views, sessions that viewed it, and of those, sessions that bought it."""
    _dialect(session)
    is_view = case((_event.c.type == EventType.view.value, 1), else_=0)
    is_buy = case((_event.c.type == EventType.purchase.value, 1), else_=0)
    per_session = (
        select(
            _event.c.product_id,
            _event.c.session_id,
            func.sum(is_view).label("views"),
            func.max(is_view).label("viewed"),
            func.max(is_buy).label("bought"),
        )
        .where(
            _event.c.type.in_([EventType.view.value, EventType.purchase.value]),
            _event.c.product_id.is_not(None),
            _event.c.received_at >= start,
            _event.c.received_at < end,
        )
        .group_by(_event.c.product_id, _event.c.session_id)
        .subquery("per_session")
    )
    viewing = func.sum(per_session.c.viewed).label("viewing")
    per_product = (
        select(
            per_session.c.product_id,
            func.sum(per_session.c.views).label("views"),
            viewing,
            func.sum(per_session.c.bought).label("buying"),
            func.sum(per_session.c.viewed * per_session.c.bought).label("converted"),
        )
        .group_by(per_session.c.product_id)
        .subquery("per_product")
    )
    rows = session.execute(
        select(
            per_product.c.product_id,
            _product.c.name,
            per_product.c.views,
            per_product.c.viewing,
            per_product.c.buying,
            per_product.c.converted,
        )
        .select_from(per_product.outerjoin(_product, _product.c.id == per_product.c.product_id))
        .order_by(per_product.c.viewing.desc(), per_product.c.product_id)
        .limit(limit)
    )
    return [
        ProductConversion(
            product_id=int(pid),
            name=None if nm is None else str(nm),
            views=int(v or 0),
            viewing_sessions=int(vs or 0),
            purchasing_sessions=int(b or 0),
            converted_sessions=int(c or 0),
            conversion_rate=_rate(int(c or 0), int(vs or 0)),
        )
        for pid, nm, v, vs, b, c in rows
    ]


def products(
    *, session: Session, start: datetime, end: datetime, limit: int = 20, by: str = "units"
) -> ProductAnalytics:
    """Top sellers and product conversion over [start, end)."""
    return ProductAnalytics(
        start=start,
        end=end,
        order_by=by,
        top_sellers=top_sellers(session=session, start=start, end=end, limit=limit, by=by),
        conversion=product_conversion(session=session, start=start, end=end, limit=limit),
    )


# ------------------------------------------------------------------ funnel


class FunnelStep(BaseModel):
    """Sessions and users that reached a step (and every step before it)."""

    step: str
    sessions: int
    users: int
    session_rate: float | None  # of the sessions that reached the first step
    session_step_rate: float | None  # of the sessions that reached the step before
    user_rate: float | None


class Funnel(BaseModel):
    """View → add to cart → purchase over [start, end)."""

    start: datetime
    end: datetime
    steps: list[FunnelStep]


def funnel(*, session: Session, start: datetime, end: datetime) -> Funnel:
    """Sessions and users reaching view, add to cart and purchase over [start, end)."""
    _dialect(session)
    flags = [
        func.max(case((_event.c.type == step.value, 1), else_=0)).label(f"s{i}")
        for i, step in enumerate(FUNNEL_STEPS)
    ]
    per_session = (
        select(_event.c.session_id, func.max(_event.c.user_id).label("user_id"), *flags)
        .where(
            _event.c.type.in_([s.value for s in FUNNEL_STEPS]),
            _event.c.received_at >= start,
            _event.c.received_at < end,
        )
        .group_by(_event.c.session_id)
        .subquery("per_session")
    )
    reached: list[ColumnElement[Any]] = []
    columns: list[Any] = []
    for i in range(len(FUNNEL_STEPS)):
        condition = and_(*[per_session.c[f"s{j}"] == 1 for j in range(i + 1)])
        reached.append(condition)
        columns.append(func.coalesce(func.sum(case((condition, 1), else_=0)), 0))
        columns.append(func.count(distinct(case((condition, per_session.c.user_id), else_=None))))
    row = session.execute(select(*columns)).one()
    steps: list[FunnelStep] = []
    first_sessions = int(row[0])
    first_users = int(row[1])
    for i, step in enumerate(FUNNEL_STEPS):
        n, users = int(row[2 * i]), int(row[2 * i + 1])
        prev = int(row[2 * (i - 1)]) if i else n
        steps.append(
            FunnelStep(
                step=step.value,
                sessions=n,
                users=users,
                session_rate=_rate(n, first_sessions),
                session_step_rate=_rate(n, prev),
                user_rate=_rate(users, first_users),
            )
        )
    return Funnel(start=start, end=end, steps=steps)


# ------------------------------------------------------------------ customers


class CustomerSegment(BaseModel):
    """New or returning customers in one currency: how many, their orders and revenue."""

    segment: str
    currency: str
    customers: int
    orders: int
    revenue: Decimal
    average_order_value: Decimal | None


class CustomerAnalytics(BaseModel):
    """New vs returning customers and average order value over [start, end)."""

    start: datetime
    end: datetime
    customers: int
    new_customers: int
    returning_customers: int
    returning_rate: float | None
    segments: list[CustomerSegment]


def customers(*, session: Session, start: datetime, end: datetime) -> CustomerAnalytics:
    """New vs returning customers, their orders, revenue and average order value."""
    d = _dialect(session)
    key = customer_key()
    first_sale = (
        select(key.label("ckey"), func.min(_order.c.created_at).label("first_at"))
        .where(_order.c.status.in_([s.value for s in SALE_STATUSES]), _order.c.created_at < end)
        .group_by(key)
        .subquery("first_sale")
    )
    values = order_values(d, start, end)
    per_order = (
        select(_order.c.id, _order.c.currency, key.label("ckey"), values.c.revenue.label("value"))
        .select_from(_order.join(values, values.c.order_id == _order.c.id))
        .subquery("per_order")
    )
    is_new = first_sale.c.first_at >= start
    segment = case((is_new, "new"), else_="returning").label("segment")
    joined = per_order.join(first_sale, first_sale.c.ckey == per_order.c.ckey)
    rows = session.execute(
        select(
            segment,
            per_order.c.currency,
            func.count(distinct(per_order.c.ckey)),
            func.count(),
            func.sum(per_order.c.value),
        )
        .select_from(joined)
        .group_by(segment, per_order.c.currency)
        .order_by(segment, per_order.c.currency)
    )
    segments: list[CustomerSegment] = []
    for seg, cur, n_customers, n_orders, value in rows:
        revenue = to_money(d, value)
        segments.append(
            CustomerSegment(
                segment=str(seg),
                currency=str(cur),
                customers=int(n_customers),
                orders=int(n_orders),
                revenue=revenue,
                average_order_value=(revenue / int(n_orders)).quantize(CENT) if n_orders else None,
            )
        )
    # The counts need no money: the sold orders alone, without their lines.
    buyers = select(key.label("ckey")).where(sales_filter(start, end)).distinct().subquery("buyers")
    total, new = session.execute(
        select(func.count(), func.coalesce(func.sum(case((is_new, 1), else_=0)), 0)).select_from(
            buyers.join(first_sale, first_sale.c.ckey == buyers.c.ckey)
        )
    ).one()
    total, new = int(total), int(new)
    return CustomerAnalytics(
        start=start,
        end=end,
        customers=total,
        new_customers=new,
        returning_customers=total - new,
        returning_rate=_rate(total - new, total),
        segments=segments,
    )


# ------------------------------------------------------------------ cohorts


class CohortCell(BaseModel):
    """Customers first buying in ``cohort`` month, active ``month_offset`` months later."""

    cohort: str
    month_offset: int
    cohort_size: int
    customers: int
    retention: float | None
    orders: int
    currency: str
    revenue: Decimal


def cohorts(*, session: Session, start: datetime, end: datetime) -> list[CohortCell]:
    """Monthly acquisition cohorts: activity of each cohort over the months in [start, end)."""
    d = _dialect(session)
    key = customer_key()
    sold = _order.c.status.in_([s.value for s in SALE_STATUSES])
    first_sale = (
        select(key.label("ckey"), func.min(_order.c.created_at).label("first_at"))
        .where(sold, _order.c.created_at < end)
        .group_by(key)
        .subquery("first_sale")
    )
    cohort = month_of(d, first_sale.c.first_at)
    sizes = (
        select(cohort.label("cohort"), func.count().label("size"))
        .select_from(first_sale)
        .group_by(cohort)
        .subquery("sizes")
    )
    values = order_values(d, start, end)
    per_order = (
        select(
            _order.c.id,
            _order.c.currency,
            _order.c.created_at,
            key.label("ckey"),
            values.c.revenue.label("value"),
        )
        .select_from(_order.join(values, values.c.order_id == _order.c.id))
        .subquery("per_order")
    )
    active_cohort = month_of(d, first_sale.c.first_at).label("cohort")
    offset = (month_index(d, per_order.c.created_at) - month_index(d, first_sale.c.first_at)).label(
        "month_offset"
    )
    activity = (
        select(
            active_cohort,
            offset,
            per_order.c.currency,
            func.count(distinct(per_order.c.ckey)).label("customers"),
            func.count().label("orders"),
            func.sum(per_order.c.value).label("revenue"),
        )
        .select_from(per_order.join(first_sale, first_sale.c.ckey == per_order.c.ckey))
        .group_by(active_cohort, offset, per_order.c.currency)
        .subquery("activity")
    )
    rows = session.execute(
        select(
            activity.c.cohort,
            activity.c.month_offset,
            sizes.c.size,
            activity.c.customers,
            activity.c.orders,
            activity.c.currency,
            activity.c.revenue,
        )
        .select_from(activity.join(sizes, sizes.c.cohort == activity.c.cohort))
        .order_by(activity.c.cohort, activity.c.month_offset, activity.c.currency)
    )
    return [
        CohortCell(
            cohort=str(c),
            month_offset=int(m),
            cohort_size=int(size),
            customers=int(n),
            retention=_rate(int(n), int(size)),
            orders=int(o),
            currency=str(cur),
            revenue=to_money(d, rev),
        )
        for c, m, size, n, o, cur, rev in rows
    ]


__all__ = [
    "DEFAULT_RANGE",
    "MAX_RANGE",
    "SALE_STATUSES",
    "CohortCell",
    "CustomerAnalytics",
    "Funnel",
    "ProductAnalytics",
    "SalesAnalytics",
    "cohorts",
    "customer_key",
    "customers",
    "day_of",
    "funnel",
    "money_sum",
    "month_index",
    "month_of",
    "order_values",
    "product_conversion",
    "products",
    "sales",
    "sales_filter",
    "to_money",
    "top_sellers",
]
