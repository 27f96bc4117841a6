"""Staff analytics: customer insights, segments, churn, cohorts, demand, suppliers, ML status.

Staff only (customers 403, anonymous 401). These routes have no baseline: when a model cannot
answer they return a 503 problem that says so; shopper routes never do. Cohorts and supplier
performance are plain analytics over the commerce tables (pandas, no model).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlmodel import Session, col

from cartwise.commerce.catalog.models import Product, Variant
from cartwise.commerce.customers.models import User
from cartwise.commerce.deps import IntId, StaffDep
from cartwise.commerce.inventory.models import StockLevel
from cartwise.commerce.orders.models import Order
from cartwise.commerce.suppliers.models import Supplier
from cartwise.platform.errors import PROBLEM_RESPONSES, NotFound
from cartwise.serving.routes.common import (
    AREAS,
    ModelRef,
    call_ml,
    in_session,
    ingress,
    model_ref,
    staff_call,
)

# Staff analytics may answer 503 (no model, no fallback), with the same problem schema.
STAFF_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    503: {**PROBLEM_RESPONSES[409], "description": "Model unavailable"},
}
router = APIRouter(prefix="/api/v1", responses=STAFF_RESPONSES)

STATUS_TIMEOUT_S = 2.0
FORECAST_HORIZON = 28


class StaffAnswer(BaseModel):
    """Fields of every model-backed staff answer."""

    model_config = ConfigDict(extra="allow")

    model: ModelRef | None = None


class CustomerInsights(StaffAnswer):
    """A customer's segment, churn risk and expected 90-day value."""

    customer_id: int
    segment: int | str | None = None
    segment_name: str | None = None
    churn_probability: float | None = None
    ltv_90d: float | None = None
    horizon_days: int | None = None


class Segments(StaffAnswer):
    """The customer segments with their profiles and sizes."""

    segments: list[dict[str, Any]]


class ChurnEntry(BaseModel):
    """A customer at risk of churning."""

    model_config = ConfigDict(extra="allow")

    customer_id: int
    email: str | None = None
    churn_probability: float
    ltv_90d: float | None = None
    segment_name: str | None = None


class ChurnRisk(StaffAnswer):
    """Customers most likely to churn, riskiest first."""

    customers: list[ChurnEntry]


class CohortRow(BaseModel):
    """Customers acquired in a month, and how many bought again ``months_since`` later."""

    cohort: str
    months_since: int
    cohort_size: int
    customers: int
    retention: float
    revenue: float


class Cohorts(BaseModel):
    """Acquisition cohorts of the last ``months`` months."""

    months: int
    cohorts: list[CohortRow]


class Forecast(StaffAnswer):
    """Daily demand quantiles of a SKU's product for the next 28 days."""

    sku: str
    product_id: int
    quantiles: list[float]
    days: list[dict[str, Any]]


class ReorderSuggestions(StaffAnswer):
    """What to reorder now, from live stock, forecasts and supplier lead times."""

    service_level: float
    suggestions: list[dict[str, Any]]


class SupplierPerformance(BaseModel):
    """A supplier's delivery record from its purchase orders (rates over due lines)."""

    supplier_id: int
    name: str
    lines: int
    due_lines: int
    on_time_rate: float | None
    fill_rate: float | None
    lead_time_mean: float | None
    lead_time_sd: float | None
    lead_time_p90: float | None
    promised_lead_time: float | None
    mean_delay_days: float | None
    open_lines: int
    cancelled_lines: int


class SuppliersPerformance(BaseModel):
    """Every supplier's performance."""

    suppliers: list[SupplierPerformance]


class AreaStatus(BaseModel):
    """Whether an area's model answers, and what its service reports."""

    available: bool
    status: dict[str, Any] | None = None
    reason: str | None = None


class MLStatus(BaseModel):
    """Each area's model status and the fallback answers served since the ingress started."""

    areas: dict[str, AreaStatus]
    fallbacks: dict[str, dict[str, int]]


# ----------------------------------------------------------------------------- customers


def _require_customer(session: Session, customer_id: int) -> None:
    if session.get(User, customer_id) is None:
        raise NotFound(f"Customer {customer_id} does not exist.")


@router.get(
    "/customers/{customer_id}/insights", response_model=CustomerInsights, tags=["analytics"]
)
async def customer_insights(
    request: Request, customer_id: IntId, _staff: StaffDep
) -> CustomerInsights:
    """A customer's segment, churn probability and 90-day lifetime value (staff)."""
    state = ingress(request)
    await in_session(state.engine, lambda s: _require_customer(s, customer_id))
    result = await staff_call(
        state, "customers", "insights", not_found=True, customer_id=customer_id
    )
    return CustomerInsights.model_validate({**result, "customer_id": customer_id})


@router.get("/analytics/segments", response_model=Segments, tags=["analytics"])
async def segments(request: Request, _staff: StaffDep) -> Segments:
    """Customer segments with their profiles and sizes (staff)."""
    result = await staff_call(ingress(request), "customers", "segments")
    return Segments.model_validate(result)


@router.get("/analytics/churn-risk", response_model=ChurnRisk, tags=["analytics"])
async def churn_risk(
    request: Request,
    _staff: StaffDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ChurnRisk:
    """The customers most likely to churn, with their value and segment (staff)."""
    state = ingress(request)
    result = await staff_call(state, "customers", "churn_risk", limit=limit)
    rows = [r for r in result.get("customers") or [] if isinstance(r, dict)][:limit]
    ids = [int(r["customer_id"]) for r in rows if r.get("customer_id") is not None]

    def emails(session: Session) -> dict[int, str]:
        if not ids:
            return {}
        stmt = select(col(User.id), col(User.email)).where(col(User.id).in_(ids))
        return {int(uid): email for uid, email in session.execute(stmt)}

    found = await in_session(state.engine, emails)
    customers = [
        ChurnEntry.model_validate({**r, "email": found.get(int(r["customer_id"]))})
        for r in rows
        if r.get("customer_id") is not None
    ]
    return ChurnRisk(customers=customers, model=model_ref(result))


def _cohorts(session: Session, months: int) -> list[dict[str, Any]]:
    import pandas as pd

    from cartwise.models.customers.cohorts import cohort_table

    o = Order.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        select(o.c.user_id, o.c.created_at, o.c.total, o.c.refunded_amount, o.c.status).where(
            o.c.user_id.is_not(None)
        )
    ).all()
    frame = pd.DataFrame(
        rows, columns=["user_id", "created_at", "total", "refunded_amount", "status"]
    )
    frame["total"] = frame["total"].astype(float)
    frame["refunded_amount"] = frame["refunded_amount"].astype(float)
    # First purchases are found over all history; only recent cohorts are shown.
    table = cohort_table(frame, max_months=months)
    now = datetime.now(UTC)
    first = now.year * 12 + now.month - 1 - (months - 1)
    oldest = f"{first // 12:04d}-{first % 12 + 1:02d}"
    table = table[table["cohort"] >= oldest]
    records: list[dict[str, Any]] = table.to_dict(orient="records")
    return records


@router.get("/analytics/cohorts", response_model=Cohorts, tags=["analytics"])
async def cohorts(
    request: Request,
    _staff: StaffDep,
    months: Annotated[int, Query(ge=1, le=36, description="How many recent months.")] = 12,
) -> Cohorts:
    """Acquisition cohorts: retention and revenue by months since the first purchase (staff)."""
    rows = await in_session(ingress(request).engine, lambda s: _cohorts(s, months))
    return Cohorts(months=months, cohorts=[CohortRow.model_validate(r) for r in rows])


# ----------------------------------------------------------------------------- inventory


def _product_of_sku(session: Session, sku: str) -> int:
    variant = session.scalars(select(Variant).where(col(Variant.sku) == sku)).first()
    if variant is None:
        raise NotFound(f"No product has the SKU {sku!r}.", slug="unknown-sku")
    return variant.product_id


@router.get("/inventory/forecast", response_model=Forecast, tags=["inventory"])
async def forecast(
    request: Request,
    _staff: StaffDep,
    sku: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")],
) -> Forecast:
    """Daily demand quantiles of the SKU's product for the next 28 days (staff)."""
    state = ingress(request)
    product_id = await in_session(state.engine, lambda s: _product_of_sku(s, sku))
    result = await staff_call(
        state,
        "demand",
        "forecast",
        not_found=True,
        product_id=product_id,
        horizon=FORECAST_HORIZON,
    )
    return Forecast.model_validate(
        {"quantiles": [], "days": [], **result, "sku": sku, "product_id": product_id}
    )


def purchase_order_lines(session: Session) -> Any:
    """Every purchase-order line in the shape of the ``purchase_orders`` fact (a DataFrame)."""
    import pandas as pd

    from cartwise.features.export import purchase_order_lines_query
    from cartwise.models.demand.suppliers import PO_COLUMNS

    frame = pd.DataFrame(session.execute(purchase_order_lines_query()).all(), columns=PO_COLUMNS)
    frame["unit_cost"] = frame["unit_cost"].astype(float)
    return frame


def _reorder_inputs(session: Session) -> tuple[dict[int, int], dict[int, float]]:
    from cartwise.models.demand.suppliers import product_lead_times

    s = StockLevel.__table__  # type: ignore[attr-defined]
    v = Variant.__table__  # type: ignore[attr-defined]
    stock = {
        int(pid): max(int(units or 0), 0)
        for pid, units in session.execute(
            select(v.c.product_id, func.sum(s.c.on_hand - s.c.reserved))
            .join(s, s.c.sku == v.c.sku)
            .where(v.c.is_active.is_(True))
            .group_by(v.c.product_id)
        )
    }
    po = purchase_order_lines(session)
    po = po[po["product_id"].notna()]
    lead_times: dict[int, float] = {}
    if len(po):
        table = product_lead_times(po)
        lead_times = {
            int(pid): float(days)
            for pid, days in zip(table["product_id"], table["lead_time_days"], strict=True)
        }
    return stock, lead_times


@router.get("/inventory/reorder-suggestions", response_model=ReorderSuggestions, tags=["inventory"])
async def reorder_suggestions(
    request: Request,
    _staff: StaffDep,
    service_level: Annotated[float, Query(ge=0.5, le=0.999)] = 0.95,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReorderSuggestions:
    """Products to reorder now: live stock against forecast demand over the lead time (staff)."""
    state = ingress(request)
    stock, lead_times = await in_session(state.engine, _reorder_inputs)
    result = await staff_call(
        state,
        "demand",
        "reorder_suggestions",
        stock=stock,
        lead_times=lead_times,
        service_level=service_level,
        limit=limit,
    )
    rows = [r for r in result.get("suggestions") or [] if isinstance(r, dict)][:limit]

    def names(session: Session) -> dict[int, str]:
        ids = [int(r["product_id"]) for r in rows if r.get("product_id") is not None]
        if not ids:
            return {}
        p = Product.__table__  # type: ignore[attr-defined]
        stmt = select(p.c.id, p.c.name).where(p.c.id.in_(ids))
        return {int(pid): name for pid, name in session.execute(stmt)}

    found = await in_session(state.engine, names)
    for row in rows:
        if row.get("product_id") is not None and "name" not in row:
            row["name"] = found.get(int(row["product_id"]))
    return ReorderSuggestions(
        service_level=service_level, suggestions=rows, model=model_ref(result)
    )


# ----------------------------------------------------------------------------- suppliers


def _nullable(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _suppliers_performance(session: Session) -> list[SupplierPerformance]:
    from cartwise.models.demand.suppliers import scores

    suppliers = session.scalars(select(Supplier).order_by(col(Supplier.id))).all()
    table = scores(purchase_order_lines(session))
    by_id = {int(r["supplier_id"]): r for r in table.to_dict(orient="records")}
    out: list[SupplierPerformance] = []
    for supplier in suppliers:
        assert supplier.id is not None
        row = by_id.get(supplier.id, {})
        out.append(
            SupplierPerformance(
                supplier_id=supplier.id,
                name=supplier.name,
                lines=int(row.get("lines", 0)),
                due_lines=int(row.get("due_lines", 0)),
                on_time_rate=_nullable(row.get("on_time_rate")),
                fill_rate=_nullable(row.get("fill_rate")),
                lead_time_mean=_nullable(row.get("lead_time_mean")),
                lead_time_sd=_nullable(row.get("lead_time_sd")),
                lead_time_p90=_nullable(row.get("lead_time_p90")),
                promised_lead_time=_nullable(
                    row.get("promised_lead_time", supplier.lead_time_days)
                ),
                mean_delay_days=_nullable(row.get("mean_delay_days")),
                open_lines=int(row.get("open_lines", 0)),
                cancelled_lines=int(row.get("cancelled_lines", 0)),
            )
        )
    return out


@router.get("/suppliers/performance", response_model=SuppliersPerformance, tags=["suppliers"])
async def suppliers_performance(request: Request, _staff: StaffDep) -> SuppliersPerformance:
    """On-time rate, fill rate and lead times of every supplier, from purchase orders (staff)."""
    rows = await in_session(ingress(request).engine, _suppliers_performance)
    return SuppliersPerformance(suppliers=rows)


# ---------------------------------------------------------------------------- ML status


@router.get("/ml/status", response_model=MLStatus, tags=["ml"])
async def ml_status(request: Request, _staff: StaffDep) -> MLStatus:
    """Each area's model version, cache hit rate and the fallbacks served (staff)."""
    state = ingress(request)
    outcomes = await asyncio.gather(
        *(call_ml(state, area, "status", timeout_s=STATUS_TIMEOUT_S) for area in AREAS)
    )
    areas = {
        area: AreaStatus(
            available=o.result is not None,
            status=o.result,
            reason=o.reason,
        )
        for area, o in zip(AREAS, outcomes, strict=True)
    }
    return MLStatus(areas=areas, fallbacks=state.fallbacks.snapshot())
