"""Stock levels, reservations and the ledger.

Every change is one conditional UPDATE (``... WHERE on_hand - reserved >= :q``) so stock can
never be oversold, on SQLite and PostgreSQL alike, without holding locks across requests.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.cache import mark_dirty
from cartwise.commerce.catalog.models import Product, ProductStatus, Variant
from cartwise.commerce.inventory.models import (
    MovementReason,
    ReservationStatus,
    StockAvailability,
    StockLevel,
    StockMovement,
    StockPublic,
    StockReservation,
)
from cartwise.platform.errors import Conflict, NotFound
from cartwise.platform.types import utcnow


class OutOfStock(Conflict):
    """Not enough available units of a SKU."""

    slug = "out-of-stock"
    title = "Out of stock"


def get_stock(*, session: Session, sku: str) -> StockLevel:
    """The stock level of a SKU, or 404."""
    level = session.get(StockLevel, sku)
    if level is None:
        raise NotFound(f"No stock record for SKU {sku!r}.")
    return level


def available_by_sku(*, session: Session, skus: list[str]) -> dict[str, int]:
    """Available units (on hand minus reserved) per SKU; unknown SKUs count as 0."""
    if not skus:
        return {}
    rows = session.exec(select(StockLevel).where(col(StockLevel.sku).in_(skus))).all()
    found = {r.sku: r.on_hand - r.reserved for r in rows}
    return {sku: found.get(sku, 0) for sku in skus}


def _record(
    session: Session,
    sku: str,
    reason: MovementReason,
    *,
    d_on_hand: int = 0,
    d_reserved: int = 0,
    order_id: str | None = None,
    purchase_order_id: str | None = None,
    actor_id: int | None = None,
    note: str = "",
) -> StockMovement:
    session.flush()
    level = session.exec(
        select(StockLevel).where(StockLevel.sku == sku).execution_options(populate_existing=True)
    ).one()
    movement = StockMovement(
        sku=sku,
        reason=reason,
        delta_on_hand=d_on_hand,
        delta_reserved=d_reserved,
        on_hand_after=level.on_hand,
        reserved_after=level.reserved,
        order_id=order_id,
        purchase_order_id=purchase_order_id,
        actor_id=actor_id,
        note=note,
    )
    session.add(movement)
    # Availability shows in the cached catalog listing: the commit must invalidate it.
    mark_dirty(session)
    return movement


def set_stock(
    *, session: Session, sku: str, on_hand: int, actor_id: int | None = None, note: str = ""
) -> StockLevel:
    """Set the on-hand level (staff); refused below what is reserved. Commits."""
    level = session.get(StockLevel, sku, with_for_update=True)
    if level is None:
        level = StockLevel(sku=sku, on_hand=0, reserved=0)
        session.add(level)
        session.flush()
    if on_hand < level.reserved:
        session.rollback()
        raise Conflict(
            f"{level.reserved} units of {sku} are reserved by open orders; "
            f"on_hand cannot go below that.",
            slug="below-reserved",
        )
    delta = on_hand - level.on_hand
    result = session.execute(
        update(StockLevel)
        .where(col(StockLevel.sku) == sku, col(StockLevel.reserved) <= on_hand)
        .values(on_hand=on_hand, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Conflict("Stock changed concurrently; try again.", slug="concurrent-update")
    _record(session, sku, MovementReason.set, d_on_hand=delta, actor_id=actor_id, note=note)
    session.commit()
    session.refresh(level)
    return level


def ensure_stock_row(*, session: Session, sku: str, on_hand: int = 0) -> None:
    """Create the stock row of a new SKU (caller commits)."""
    if session.get(StockLevel, sku) is None:
        session.add(StockLevel(sku=sku, on_hand=on_hand, reserved=0))
        mark_dirty(session)
        if on_hand:
            session.flush()
            _record(session, sku, MovementReason.set, d_on_hand=on_hand, note="initial stock")


def reserve(
    *, session: Session, sku: str, quantity: int, order_id: str, expires_at: datetime
) -> StockReservation:
    """Hold units for an order; 409 out-of-stock when not enough are available.

    Does not commit: it is part of the checkout unit of work.
    """
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    result = session.execute(
        update(StockLevel)
        .where(
            col(StockLevel.sku) == sku,
            col(StockLevel.on_hand) - col(StockLevel.reserved) >= quantity,
        )
        .values(reserved=col(StockLevel.reserved) + quantity, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise OutOfStock(f"Not enough stock for {sku}.", sku=sku)
    reservation = StockReservation(
        sku=sku, order_id=order_id, quantity=quantity, expires_at=expires_at
    )
    session.add(reservation)
    _record(session, sku, MovementReason.reserve, d_reserved=quantity, order_id=order_id)
    return reservation


def _active_reservations(session: Session, order_id: str) -> list[StockReservation]:
    return list(
        session.exec(
            select(StockReservation).where(
                StockReservation.order_id == order_id,
                StockReservation.status == ReservationStatus.active,
            )
        )
    )


def _settle(
    session: Session,
    order_id: str,
    to_status: ReservationStatus,
    reason: MovementReason,
    *,
    sold: bool,
) -> int:
    """Close the order's active reservations; a sale also takes the units off hand."""
    units = 0
    for res in _active_reservations(session, order_id):
        # Claim the reservation first, so a concurrent settle of the same order skips it.
        claimed = session.execute(
            update(StockReservation)
            .where(
                col(StockReservation.id) == res.id,
                col(StockReservation.status) == ReservationStatus.active,
            )
            .values(status=to_status)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        d_on_hand = -res.quantity if sold else 0
        session.execute(
            update(StockLevel)
            .where(col(StockLevel.sku) == res.sku)
            .values(
                on_hand=col(StockLevel.on_hand) + d_on_hand,
                reserved=col(StockLevel.reserved) - res.quantity,
                updated_at=utcnow(),
            )
        )
        _record(
            session,
            res.sku,
            reason,
            d_on_hand=d_on_hand,
            d_reserved=-res.quantity,
            order_id=order_id,
        )
        units += res.quantity
    return units


def commit_reservations(*, session: Session, order_id: str) -> int:
    """Payment: turn the order's reservations into sales. Does not commit; returns units."""
    return _settle(session, order_id, ReservationStatus.committed, MovementReason.sale, sold=True)


def release_reservations(
    *, session: Session, order_id: str, reason: MovementReason = MovementReason.release
) -> int:
    """Cancellation or expiry: give the held units back. Does not commit; returns units."""
    return _settle(session, order_id, ReservationStatus.released, reason, sold=False)


def restock(
    *,
    session: Session,
    sku: str,
    quantity: int,
    order_id: str | None,
    reason: MovementReason = MovementReason.refund,
    purchase_order_id: str | None = None,
    actor_id: int | None = None,
    note: str = "",
) -> None:
    """Put units on hand: returns, or a supplier delivery (``purchase_order_id``). No commit."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    result = session.execute(
        update(StockLevel)
        .where(col(StockLevel.sku) == sku)
        .values(on_hand=col(StockLevel.on_hand) + quantity, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # A SKU without a stock row yet (never stocked): create it, then add.
        ensure_stock_row(session=session, sku=sku)
        session.flush()
        session.execute(
            update(StockLevel)
            .where(col(StockLevel.sku) == sku)
            .values(on_hand=col(StockLevel.on_hand) + quantity, updated_at=utcnow())
        )
    _record(
        session,
        sku,
        reason,
        d_on_hand=quantity,
        order_id=order_id,
        purchase_order_id=purchase_order_id,
        actor_id=actor_id,
        note=note,
    )


def expired_order_ids(
    *, session: Session, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Orders holding reservations past their expiry."""
    now = now or utcnow()
    stmt = (
        select(StockReservation.order_id)
        .where(
            StockReservation.status == ReservationStatus.active,
            col(StockReservation.expires_at) < now,
        )
        .distinct()
        .limit(limit)
    )
    return [str(x) for x in session.exec(stmt)]


def movements(*, session: Session, sku: str, limit: int = 100) -> list[StockMovement]:
    """The newest ledger lines of a SKU."""
    stmt = (
        select(StockMovement)
        .where(StockMovement.sku == sku)
        .order_by(col(StockMovement.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt))


def require_known_sku(*, session: Session, sku: str) -> Variant:
    """The variant of a SKU, or 404 (stock rows exist only for real variants)."""
    variant = session.exec(select(Variant).where(Variant.sku == sku)).first()
    if variant is None:
        raise NotFound(f"Unknown SKU {sku!r}.", slug="unknown-sku")
    return variant


def stock_public(level: StockLevel) -> StockPublic:
    """The staff view of a stock level."""
    return StockPublic(
        sku=level.sku,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.on_hand - level.reserved,
        updated_at=level.updated_at,
    )


def stock_for_staff(*, session: Session, sku: str) -> StockPublic:
    """On hand, reserved and available units of a known SKU (zeros if it has no row yet)."""
    variant = require_known_sku(session=session, sku=sku)
    level = session.get(StockLevel, sku)
    if level is None:
        product = session.get(Product, variant.product_id)
        when = product.updated_at if product is not None else utcnow()
        return StockPublic(sku=sku, on_hand=0, reserved=0, available=0, updated_at=when)
    return stock_public(level)


def stock_for_public(*, session: Session, sku: str) -> StockAvailability:
    """Available units of a SKU on sale; SKUs not on sale are 404 to the public."""
    variant = require_known_sku(session=session, sku=sku)
    product = session.get(Product, variant.product_id)
    if not variant.is_active or product is None or product.status != ProductStatus.active:
        raise NotFound(f"Unknown SKU {sku!r}.", slug="unknown-sku")
    available = available_by_sku(session=session, skus=[sku])[sku]
    return StockAvailability(sku=sku, available=available, in_stock=available > 0)


def set_known_stock(
    *, session: Session, sku: str, on_hand: int, actor_id: int | None = None, note: str = ""
) -> StockPublic:
    """Set the on-hand level of an existing SKU (404 for unknown SKUs). Commits."""
    require_known_sku(session=session, sku=sku)
    level = set_stock(session=session, sku=sku, on_hand=on_hand, actor_id=actor_id, note=note)
    return stock_public(level)


def known_movements(*, session: Session, sku: str, limit: int = 100) -> list[StockMovement]:
    """The newest ledger lines of an existing SKU (404 for unknown SKUs)."""
    require_known_sku(session=session, sku=sku)
    return movements(session=session, sku=sku, limit=limit)
