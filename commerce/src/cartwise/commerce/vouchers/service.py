"""Voucher services: create and list (staff), validate and redeem (checkout).

The usage limit holds under concurrency because redemption is one conditional UPDATE
(``times_used = times_used + 1 WHERE times_used < usage_limit``) inside the checkout
transaction: on PostgreSQL the row lock makes a second redeemer re-check the condition after
the first commits; on SQLite writers are serialised. A check constraint backs it up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.money import quantize
from cartwise.commerce.vouchers.models import Voucher, VoucherCreate, VoucherKind
from cartwise.platform.errors import Conflict, Unprocessable
from cartwise.platform.types import utcnow


class VoucherProblem(Unprocessable):
    """A voucher that cannot be used for this order."""

    slug = "voucher-invalid"
    title = "Voucher cannot be used"


def normalize_code(code: str) -> str:
    """Voucher codes compare case-insensitively; they are stored upper-case."""
    return code.strip().upper()


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_voucher(*, session: Session, data: VoucherCreate) -> Voucher:
    """Create a voucher (staff); 422 on inconsistent values, 409 when the code exists. Commits."""
    if data.kind == VoucherKind.percent and not Decimal("0") < data.value <= Decimal("100"):
        raise Unprocessable("A percent voucher's value must be above 0 and at most 100.")
    if data.kind == VoucherKind.fixed and data.value <= 0:
        raise Unprocessable("A fixed voucher's value must be above 0.")
    starts, expires = _aware(data.starts_at), _aware(data.expires_at)
    if starts is not None and expires is not None and expires <= starts:
        raise Unprocessable("expires_at must be after starts_at.")
    code = normalize_code(data.code)
    if session.exec(select(Voucher).where(Voucher.code == code)).first() is not None:
        raise Conflict(f"A voucher with code {code} already exists.", slug="voucher-exists")
    voucher = Voucher.model_validate(
        data.model_dump() | {"code": code, "starts_at": starts, "expires_at": expires}
    )
    session.add(voucher)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            f"A voucher with code {code} already exists.", slug="voucher-exists"
        ) from exc
    session.refresh(voucher)
    return voucher


def list_vouchers(*, session: Session, offset: int = 0, limit: int = 50) -> list[Voucher]:
    """Vouchers, newest first."""
    stmt = select(Voucher).order_by(col(Voucher.id).desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))


def discount_for(voucher: Voucher, subtotal: Decimal) -> Decimal:
    """The discount a voucher gives on a subtotal; never more than the subtotal."""
    if voucher.kind == VoucherKind.percent:
        amount = quantize(subtotal * voucher.value / Decimal("100"))
    else:
        amount = quantize(voucher.value)
    return min(amount, quantize(subtotal))


def validate_voucher(
    *, session: Session, code: str, subtotal: Decimal, now: datetime | None = None
) -> tuple[Voucher, Decimal]:
    """The voucher for a code and its discount on ``subtotal``; 422 with the reason otherwise."""
    now = now or utcnow()
    normalized = normalize_code(code)
    voucher = session.exec(select(Voucher).where(Voucher.code == normalized)).first()
    if voucher is None or not voucher.is_active:
        raise VoucherProblem(f"Voucher {normalized} is not valid.", code=normalized)
    starts, expires = _aware(voucher.starts_at), _aware(voucher.expires_at)
    if starts is not None and now < starts:
        raise VoucherProblem(f"Voucher {normalized} is not valid yet.", code=normalized)
    if expires is not None and now >= expires:
        raise VoucherProblem(f"Voucher {normalized} has expired.", code=normalized)
    if voucher.usage_limit is not None and voucher.times_used >= voucher.usage_limit:
        raise VoucherProblem(f"Voucher {normalized} has been used up.", code=normalized)
    if subtotal < voucher.min_spend:
        raise VoucherProblem(
            f"Voucher {normalized} needs a minimum spend of {quantize(voucher.min_spend)}.",
            code=normalized,
            min_spend=str(quantize(voucher.min_spend)),
        )
    return voucher, discount_for(voucher, subtotal)


def redeem(*, session: Session, voucher: Voucher) -> None:
    """Count one use, unless the limit is reached (then 422). Does not commit."""
    result = session.execute(
        update(Voucher)
        .where(
            col(Voucher.id) == voucher.id,
            or_(
                col(Voucher.usage_limit).is_(None),
                col(Voucher.times_used) < col(Voucher.usage_limit),
            ),
        )
        .values(times_used=col(Voucher.times_used) + 1)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise VoucherProblem(f"Voucher {voucher.code} has been used up.", code=voucher.code)
