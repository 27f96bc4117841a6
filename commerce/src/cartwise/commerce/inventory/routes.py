"""HTTP routes of the inventory domain: stock levels per SKU and the stock ledger.

Staff see on hand, reserved and available units; everyone else sees only what can be bought
(`available` and `in_stock`) for SKUs on sale, and unknown or unlisted SKUs are 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from cartwise.commerce.deps import OptionalPrincipalDep, SessionDep, StaffDep
from cartwise.commerce.inventory import service
from cartwise.commerce.inventory.models import (
    MovementPublic,
    StockAvailability,
    StockPublic,
    StockSet,
)
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["inventory"], responses=PROBLEM_RESPONSES)

Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


@router.put("/inventory/{sku}", response_model=StockPublic)
def set_stock(sku: Sku, data: StockSet, session: SessionDep, staff: StaffDep) -> StockPublic:
    """Set the on-hand level of a SKU (staff); written to the ledger, never below reserved."""
    return service.set_known_stock(
        session=session, sku=sku, on_hand=data.on_hand, actor_id=staff.subject, note=data.note
    )


@router.get("/inventory/{sku}", response_model=StockPublic | StockAvailability)
def read_stock(
    sku: Sku, session: SessionDep, principal: OptionalPrincipalDep
) -> StockPublic | StockAvailability:
    """Stock of a SKU: full levels for staff, only availability for everyone else."""
    if principal is not None and principal.is_staff:
        return service.stock_for_staff(session=session, sku=sku)
    return service.stock_for_public(session=session, sku=sku)


@router.get("/inventory/{sku}/movements", response_model=list[MovementPublic])
def list_movements(
    sku: Sku,
    session: SessionDep,
    _: StaffDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[MovementPublic]:
    """The newest stock-ledger lines of a SKU (staff)."""
    return [
        MovementPublic.model_validate(m, from_attributes=True)
        for m in service.known_movements(session=session, sku=sku, limit=limit)
    ]
