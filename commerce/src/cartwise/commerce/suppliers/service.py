"""Suppliers and purchase orders: create, list, cancel, and receive goods into stock.

Receiving is the only way a purchase order touches stock: every received unit goes through
the inventory ledger as a ``restock`` movement naming the purchase order. A receipt first
claims the purchase order row with a conditional UPDATE (on SQLite under ``BEGIN IMMEDIATE``),
so concurrent receipts of one purchase order run one after the other; each line is then
raised with ``... WHERE quantity_received + :q <= quantity_ordered``, so no receipt can take a
line past what was ordered. A receipt's key (``receipt_id`` or ``Idempotency-Key``) is stored
under a unique constraint: a replay answers with the purchase order as it stands and books
nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.models import Variant
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.inventory.models import MovementReason
from cartwise.commerce.money import quantize
from cartwise.commerce.orders.checkout import IdempotencyKeyReused
from cartwise.commerce.suppliers.models import (
    RECEIVABLE,
    PurchaseOrder,
    PurchaseOrderCreate,
    PurchaseOrderLine,
    PurchaseOrderLinePublic,
    PurchaseOrderPage,
    PurchaseOrderPublic,
    PurchaseOrderReceipt,
    PurchaseOrderStatus,
    ReceiptPublic,
    ReceiveRequest,
    Supplier,
    SupplierCreate,
    SupplierUpdate,
    can_transition,
)
from cartwise.platform.errors import Conflict, NotFound, Unprocessable
from cartwise.platform.types import new_uuid, utcnow


class InvalidPurchaseOrderTransition(Conflict):
    """The purchase order's state machine does not allow this move."""

    slug = "invalid-transition"
    title = "Invalid purchase order transition"


class OverReceipt(Conflict):
    """More units would be received than were ordered."""

    slug = "over-receipt"
    title = "More received than ordered"


@dataclass(frozen=True, slots=True)
class ReceiveOutcome:
    """The purchase order after a receipt, and whether the receipt replayed an earlier one."""

    purchase_order: PurchaseOrderPublic
    replayed: bool


def _begin_write(session: Session) -> None:
    """On SQLite take the write lock up front, so the transaction reads what it then writes."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi = connection.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _fingerprint(payload: object) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ suppliers


def get_supplier(*, session: Session, supplier_id: int) -> Supplier:
    """A supplier, or 404."""
    supplier = session.get(Supplier, supplier_id)
    if supplier is None:
        raise NotFound("Supplier not found.")
    return supplier


def list_suppliers(*, session: Session, active: bool | None = None) -> list[Supplier]:
    """Every supplier by name (optionally only active or inactive ones)."""
    stmt = select(Supplier).order_by(col(Supplier.name))
    if active is not None:
        stmt = stmt.where(Supplier.is_active == active)
    return list(session.exec(stmt))


def _name_taken(session: Session, name: str, but: int | None = None) -> bool:
    stmt = select(Supplier.id).where(Supplier.name == name)
    if but is not None:
        stmt = stmt.where(Supplier.id != but)
    return session.exec(stmt).first() is not None


def _duplicate_name(name: str) -> Conflict:
    return Conflict(f"A supplier named {name!r} exists.", slug="duplicate-supplier", name=name)


def create_supplier(*, session: Session, data: SupplierCreate) -> Supplier:
    """Add a supplier; 409 when the name is taken. Commits."""
    if _name_taken(session, data.name):
        raise _duplicate_name(data.name)
    supplier = Supplier.model_validate(data)
    session.add(supplier)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent create with the same name
        session.rollback()
        raise _duplicate_name(data.name) from exc
    session.refresh(supplier)
    return supplier


def update_supplier(*, session: Session, supplier_id: int, data: SupplierUpdate) -> Supplier:
    """Change a supplier's fields; 409 when renamed to a taken name. Commits."""
    supplier = get_supplier(session=session, supplier_id=supplier_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)
    if "name" in changes and _name_taken(session, changes["name"], but=supplier_id):
        raise _duplicate_name(changes["name"])
    for key, value in changes.items():
        if value is not None:
            setattr(supplier, key, value)
    supplier.updated_at = utcnow()
    session.add(supplier)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise _duplicate_name(str(changes.get("name"))) from exc
    session.refresh(supplier)
    return supplier


def delete_supplier(*, session: Session, supplier_id: int) -> None:
    """Remove a supplier without purchase orders; otherwise 409 (deactivate it instead)."""
    supplier = get_supplier(session=session, supplier_id=supplier_id)
    used = session.exec(
        select(PurchaseOrder.id).where(PurchaseOrder.supplier_id == supplier_id).limit(1)
    ).first()
    if used is not None:
        raise Conflict(
            "The supplier has purchase orders; set is_active to false instead.",
            slug="supplier-in-use",
        )
    session.delete(supplier)
    try:
        session.commit()
    except IntegrityError as exc:  # a purchase order arrived meanwhile
        session.rollback()
        raise Conflict("The supplier is in use.", slug="supplier-in-use") from exc


# ------------------------------------------------------------------------ purchase orders


def _lines(session: Session, po_ids: list[str]) -> dict[str, list[PurchaseOrderLine]]:
    found: dict[str, list[PurchaseOrderLine]] = {i: [] for i in po_ids}
    if po_ids:
        stmt = (
            select(PurchaseOrderLine)
            .where(col(PurchaseOrderLine.purchase_order_id).in_(po_ids))
            .order_by(col(PurchaseOrderLine.id))
            .execution_options(populate_existing=True)
        )
        for line in session.exec(stmt):
            found[line.purchase_order_id].append(line)
    return found


def _public(
    po: PurchaseOrder, lines: list[PurchaseOrderLine], receipts: list[PurchaseOrderReceipt]
) -> PurchaseOrderPublic:
    data = po.model_dump(warnings=False)  # statuses come back from the database as str
    data["lines"] = [
        PurchaseOrderLinePublic(
            id=line.id or 0,
            sku=line.sku,
            variant_id=line.variant_id,
            product_id=line.product_id,
            quantity_ordered=line.quantity_ordered,
            quantity_received=line.quantity_received,
            quantity_outstanding=line.quantity_ordered - line.quantity_received,
            unit_cost=line.unit_cost,
        )
        for line in lines
    ]
    data["total_cost"] = quantize(
        sum((line.unit_cost * line.quantity_ordered for line in lines), Decimal("0"))
    )
    data["receipts"] = [
        ReceiptPublic(
            receipt_id=r.receipt_key,
            quantities=dict(r.quantities),
            actor_id=r.actor_id,
            note=r.note,
            created_at=r.created_at,
        )
        for r in receipts
    ]
    return PurchaseOrderPublic.model_validate(data)


def purchase_order_public(session: Session, po: PurchaseOrder) -> PurchaseOrderPublic:
    """The API view of a purchase order, with its lines and receipts."""
    receipts = list(
        session.exec(
            select(PurchaseOrderReceipt)
            .where(PurchaseOrderReceipt.purchase_order_id == po.id)
            .order_by(col(PurchaseOrderReceipt.id))
        )
    )
    return _public(po, _lines(session, [po.id])[po.id], receipts)


def get_purchase_order(*, session: Session, po_id: str) -> PurchaseOrder:
    """A purchase order read fresh from the database, or 404."""
    po = session.get(PurchaseOrder, po_id, populate_existing=True)
    if po is None:
        raise NotFound("Purchase order not found.")
    return po


def list_purchase_orders(
    *,
    session: Session,
    page: int = 1,
    page_size: int = 20,
    status: PurchaseOrderStatus | None = None,
    supplier_id: int | None = None,
    sku: str | None = None,
) -> PurchaseOrderPage:
    """A page of purchase orders, newest first, with their lines (receipts: see one order)."""
    filters: list[ColumnElement[bool]] = []
    if status is not None:
        filters.append(col(PurchaseOrder.status) == status)
    if supplier_id is not None:
        filters.append(col(PurchaseOrder.supplier_id) == supplier_id)
    if sku is not None:
        having = select(PurchaseOrderLine.purchase_order_id).where(PurchaseOrderLine.sku == sku)
        filters.append(col(PurchaseOrder.id).in_(having))
    total = session.exec(select(func.count()).select_from(PurchaseOrder).where(*filters)).one()
    orders = list(
        session.exec(
            select(PurchaseOrder)
            .where(*filters)
            .order_by(col(PurchaseOrder.placed_at).desc(), col(PurchaseOrder.id))
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
    )
    lines = _lines(session, [o.id for o in orders])
    items = [_public(o, lines[o.id], []) for o in orders]
    return PurchaseOrderPage(items=items, total=int(total), page=page, page_size=page_size)


def _replay_of_create(session: Session, key: str, fingerprint: str) -> PurchaseOrder | None:
    po = session.exec(select(PurchaseOrder).where(PurchaseOrder.idempotency_key == key)).first()
    if po is not None and po.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different purchase order."
        )
    return po


def create_purchase_order(
    *,
    session: Session,
    data: PurchaseOrderCreate,
    actor_id: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[PurchaseOrder, bool]:
    """Place a purchase order with a supplier; returns it and whether it is a replay. Commits.

    The supplier must exist and be active (422/409) and every SKU must be a known variant
    (422). ``expected_at`` defaults to now plus the supplier's promised lead time.
    """
    fingerprint = _fingerprint(data.model_dump(mode="json"))
    if idempotency_key is not None:
        replay = _replay_of_create(session, idempotency_key, fingerprint)
        if replay is not None:
            return replay, True
    supplier = session.get(Supplier, data.supplier_id)
    if supplier is None:
        raise Unprocessable(f"Unknown supplier {data.supplier_id}.", slug="unknown-supplier")
    if not supplier.is_active:
        raise Conflict("The supplier is not active.", slug="supplier-inactive")
    skus = [line.sku for line in data.lines]
    variants = {v.sku: v for v in session.exec(select(Variant).where(col(Variant.sku).in_(skus)))}
    unknown = [sku for sku in skus if sku not in variants]
    if unknown:
        raise Unprocessable(
            f"Unknown SKU(s): {', '.join(unknown)}.", slug="unknown-sku", skus=unknown
        )
    now = utcnow()
    expected = data.expected_at or now + timedelta(days=supplier.lead_time_days)
    if expected.tzinfo is None:  # a time without a zone is taken as UTC
        expected = expected.replace(tzinfo=UTC)
    if expected < now - timedelta(days=1):
        raise Unprocessable("expected_at lies in the past.", slug="expected-in-past")
    po = PurchaseOrder(
        id=new_uuid(),
        supplier_id=data.supplier_id,
        currency=data.currency,
        note=data.note,
        created_by=actor_id,
        idempotency_key=idempotency_key,
        request_hash=fingerprint if idempotency_key is not None else None,
        placed_at=now,
        expected_at=expected,
        updated_at=now,
    )
    session.add(po)
    for line in data.lines:
        variant = variants[line.sku]
        session.add(
            PurchaseOrderLine(
                purchase_order_id=po.id,
                variant_id=variant.id,
                product_id=variant.product_id,
                sku=line.sku,
                quantity_ordered=line.quantity,
                unit_cost=quantize(line.unit_cost),
            )
        )
        # Deliveries add to the SKU's stock row: make sure there is one.
        inventory.ensure_stock_row(session=session, sku=line.sku)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if idempotency_key is not None:  # a concurrent request with the same key won
            replay = _replay_of_create(session, idempotency_key, fingerprint)
            if replay is not None:
                return replay, True
        raise Conflict("The purchase order could not be placed; try again.") from exc
    session.refresh(po)
    return po, False


def _claim(session: Session, po_id: str, allowed: frozenset[PurchaseOrderStatus]) -> bool:
    """Touch the purchase order if it is in an allowed state: the row is ours until commit."""
    result = session.execute(
        update(PurchaseOrder)
        .where(col(PurchaseOrder.id) == po_id, col(PurchaseOrder.status).in_(list(allowed)))
        .values(updated_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def cancel_purchase_order(*, session: Session, po_id: str, reason: str = "") -> PurchaseOrder:
    """Cancel a purchase order that is not fully received; what arrived stays. Commits."""
    try:
        _begin_write(session)
        po = get_purchase_order(session=session, po_id=po_id)
        current = PurchaseOrderStatus(po.status)
        target = PurchaseOrderStatus.cancelled
        if not can_transition(current, target):
            raise InvalidPurchaseOrderTransition(
                f"A {current} purchase order cannot be cancelled.",
                current=str(current),
                target=str(target),
            )
        note = po.note
        if reason:
            note = ((note + " | ") if note else "") + f"cancelled: {reason}"
        result = session.execute(
            update(PurchaseOrder)
            .where(col(PurchaseOrder.id) == po_id, col(PurchaseOrder.status) == current)
            .values(status=target, updated_at=utcnow(), note=note[:500])
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidPurchaseOrderTransition(
                "The purchase order changed concurrently; reload and retry."
            )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return get_purchase_order(session=session, po_id=po_id)


def _find_receipt(session: Session, po_id: str, key: str) -> PurchaseOrderReceipt | None:
    return session.exec(
        select(PurchaseOrderReceipt).where(
            PurchaseOrderReceipt.purchase_order_id == po_id,
            PurchaseOrderReceipt.receipt_key == key,
        )
    ).first()


def _replayed(session: Session, po_id: str, key: str, fingerprint: str) -> ReceiveOutcome | None:
    receipt = _find_receipt(session, po_id, key)
    if receipt is None:
        return None
    if receipt.request_hash != fingerprint:
        raise IdempotencyKeyReused("This receipt id was already used with other quantities.")
    po = get_purchase_order(session=session, po_id=po_id)
    return ReceiveOutcome(purchase_order_public(session, po), replayed=True)


def receive(
    *,
    session: Session,
    po_id: str,
    data: ReceiveRequest,
    receipt_key: str | None = None,
    actor_id: int | None = None,
) -> ReceiveOutcome:
    """Book a delivery: raise the lines, put the units in stock, move the status. Commits.

    409 ``over-receipt`` when a line would exceed what was ordered, 409 ``invalid-transition``
    on a received or cancelled order, 422 for SKUs not on the order; in each case nothing is
    booked. A replay of a receipt key returns the order and books nothing.
    """
    key = receipt_key or data.receipt_id
    if receipt_key and data.receipt_id and receipt_key != data.receipt_id:
        raise Unprocessable(
            "Idempotency-Key and receipt_id differ; send one of them.", slug="receipt-id-mismatch"
        )
    quantities = {line.sku: line.quantity for line in data.lines}
    fingerprint = _fingerprint({"quantities": quantities, "note": data.note})
    try:
        _begin_write(session)
        if not _claim(session, po_id, RECEIVABLE):
            session.rollback()
            if key is not None:
                replay = _replayed(session, po_id, key, fingerprint)
                if replay is not None:
                    return replay
            po = get_purchase_order(session=session, po_id=po_id)
            raise InvalidPurchaseOrderTransition(
                f"A {po.status} purchase order cannot receive goods.", current=str(po.status)
            )
        when = utcnow()  # taken once the row is ours, so stamps follow the commit order
        if key is not None and _find_receipt(session, po_id, key) is not None:
            session.rollback()  # undo the claim: a replay changes nothing
            replay = _replayed(session, po_id, key, fingerprint)
            if replay is not None:
                return replay
        po = get_purchase_order(session=session, po_id=po_id)
        lines = {line.sku: line for line in _lines(session, [po_id])[po_id]}
        unknown = [sku for sku in quantities if sku not in lines]
        if unknown:
            raise Unprocessable(
                f"Not on this purchase order: {', '.join(unknown)}.",
                slug="unknown-line",
                skus=unknown,
            )
        for sku, quantity in quantities.items():
            line = lines[sku]
            raised = session.execute(
                update(PurchaseOrderLine)
                .where(
                    col(PurchaseOrderLine.id) == line.id,
                    col(PurchaseOrderLine.quantity_received) + quantity
                    <= col(PurchaseOrderLine.quantity_ordered),
                )
                .values(quantity_received=col(PurchaseOrderLine.quantity_received) + quantity)
            )
            if raised.rowcount != 1:  # type: ignore[attr-defined]
                outstanding = line.quantity_ordered - line.quantity_received
                raise OverReceipt(
                    f"{quantity} units of {sku} would exceed the {outstanding} outstanding.",
                    sku=sku,
                    outstanding=outstanding,
                    quantity=quantity,
                )
            inventory.restock(
                session=session,
                sku=sku,
                quantity=quantity,
                order_id=None,
                reason=MovementReason.restock,
                purchase_order_id=po_id,
                actor_id=actor_id,
                note=(data.note or f"purchase order {po_id}")[:200],
            )
        session.add(
            PurchaseOrderReceipt(
                purchase_order_id=po_id,
                receipt_key=key or new_uuid(),
                request_hash=fingerprint,
                quantities=quantities,
                actor_id=actor_id,
                note=data.note,
                created_at=when,
            )
        )
        session.flush()
        fresh = _lines(session, [po_id])[po_id]
        complete = all(line.quantity_received >= line.quantity_ordered for line in fresh)
        current = PurchaseOrderStatus(po.status)
        target = (
            PurchaseOrderStatus.received if complete else PurchaseOrderStatus.partially_received
        )
        if target != current and not can_transition(current, target):  # pragma: no cover
            raise InvalidPurchaseOrderTransition(f"A {current} order cannot become {target}.")
        session.execute(
            update(PurchaseOrder)
            .where(col(PurchaseOrder.id) == po_id)
            .values(status=target, received_at=when, updated_at=when)
        )
        session.commit()
    except IntegrityError as exc:
        # The same receipt key committed concurrently (the claim makes this rare).
        session.rollback()
        if key is not None:
            replay = _replayed(session, po_id, key, fingerprint)
            if replay is not None:
                return replay
        raise Conflict("The receipt could not be booked; try again.") from exc
    except BaseException:
        session.rollback()
        raise
    po = get_purchase_order(session=session, po_id=po_id)
    return ReceiveOutcome(purchase_order_public(session, po), replayed=False)
