"""HTTP routes of the suppliers domain: suppliers and purchase orders (staff only).

Receiving goods (``POST /purchase-orders/{id}/receive``) is the only way a purchase order
changes stock: each unit goes through the inventory ledger. A receipt named by ``receipt_id``
or ``Idempotency-Key`` is booked once; a replay answers 200 with the order as it stands and
the header ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from cartwise.commerce.catalog.models import SKU
from cartwise.commerce.deps import AdminDep, IdempotencyKey, IntId, SessionDep, StaffDep
from cartwise.commerce.suppliers import service
from cartwise.commerce.suppliers.models import (
    CancelRequest,
    PurchaseOrderCreate,
    PurchaseOrderPage,
    PurchaseOrderPublic,
    PurchaseOrderStatus,
    ReceiveRequest,
    SupplierCreate,
    SupplierPublic,
    SupplierUpdate,
)
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["suppliers"], responses=PROBLEM_RESPONSES)

PoId = Annotated[str, Path(min_length=1, max_length=32)]
REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "A retry with the same key: the earlier result, unchanged"}
}


def _supplier(supplier: object) -> SupplierPublic:
    return SupplierPublic.model_validate(supplier, from_attributes=True)


@router.post("/suppliers", response_model=SupplierPublic, status_code=status.HTTP_201_CREATED)
def create_supplier(data: SupplierCreate, session: SessionDep, _: StaffDep) -> SupplierPublic:
    """Add a supplier (staff); 409 when the name is taken."""
    return _supplier(service.create_supplier(session=session, data=data))


@router.get("/suppliers", response_model=list[SupplierPublic])
def list_suppliers(
    session: SessionDep, _: StaffDep, active: Annotated[bool | None, Query()] = None
) -> list[SupplierPublic]:
    """Every supplier by name (staff), optionally only active or inactive ones."""
    return [_supplier(s) for s in service.list_suppliers(session=session, active=active)]


@router.get("/suppliers/{supplier_id}", response_model=SupplierPublic)
def read_supplier(supplier_id: IntId, session: SessionDep, _: StaffDep) -> SupplierPublic:
    """One supplier (staff)."""
    return _supplier(service.get_supplier(session=session, supplier_id=supplier_id))


@router.patch("/suppliers/{supplier_id}", response_model=SupplierPublic)
def update_supplier(
    supplier_id: IntId, data: SupplierUpdate, session: SessionDep, _: StaffDep
) -> SupplierPublic:
    """Change a supplier (staff); deactivate with ``is_active: false``."""
    return _supplier(service.update_supplier(session=session, supplier_id=supplier_id, data=data))


@router.delete("/suppliers/{supplier_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_supplier(supplier_id: IntId, session: SessionDep, _: AdminDep) -> Response:
    """Remove a supplier without purchase orders (admin); 409 otherwise."""
    service.delete_supplier(session=session, supplier_id=supplier_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/purchase-orders",
    response_model=PurchaseOrderPublic,
    status_code=status.HTTP_201_CREATED,
    responses=REPLAYED,
)
def create_purchase_order(
    data: PurchaseOrderCreate,
    response: Response,
    session: SessionDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKey = None,
) -> PurchaseOrderPublic:
    """Place a purchase order with a supplier (staff)."""
    po, replayed = service.create_purchase_order(
        session=session, data=data, actor_id=staff.subject, idempotency_key=idempotency_key
    )
    if replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return service.purchase_order_public(session, po)


@router.get("/purchase-orders", response_model=PurchaseOrderPage)
def list_purchase_orders(
    session: SessionDep,
    _: StaffDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    status_filter: Annotated[PurchaseOrderStatus | None, Query(alias="status")] = None,
    supplier_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    sku: Annotated[str | None, Query(min_length=1, max_length=64, pattern=SKU)] = None,
) -> PurchaseOrderPage:
    """Purchase orders, newest first (staff); filter by status, supplier or SKU."""
    return service.list_purchase_orders(
        session=session,
        page=page,
        page_size=page_size,
        status=status_filter,
        supplier_id=supplier_id,
        sku=sku,
    )


@router.get("/purchase-orders/{po_id}", response_model=PurchaseOrderPublic)
def read_purchase_order(po_id: PoId, session: SessionDep, _: StaffDep) -> PurchaseOrderPublic:
    """One purchase order with its lines and receipts (staff)."""
    po = service.get_purchase_order(session=session, po_id=po_id)
    return service.purchase_order_public(session, po)


@router.post("/purchase-orders/{po_id}/cancel", response_model=PurchaseOrderPublic)
def cancel_purchase_order(
    po_id: PoId, session: SessionDep, _: StaffDep, data: CancelRequest | None = None
) -> PurchaseOrderPublic:
    """Cancel a purchase order not yet fully received (staff); received units stay in stock."""
    po = service.cancel_purchase_order(
        session=session, po_id=po_id, reason=data.reason if data else ""
    )
    return service.purchase_order_public(session, po)


@router.post(
    "/purchase-orders/{po_id}/receive", response_model=PurchaseOrderPublic, responses=REPLAYED
)
def receive_purchase_order(
    po_id: PoId,
    data: ReceiveRequest,
    response: Response,
    session: SessionDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKey = None,
) -> PurchaseOrderPublic:
    """Book a delivery (staff): units per SKU go into stock through the ledger."""
    outcome = service.receive(
        session=session,
        po_id=po_id,
        data=data,
        receipt_key=idempotency_key,
        actor_id=staff.subject,
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.purchase_order
