"""HTTP routes of the vouchers domain (staff only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from cartwise.commerce.deps import SessionDep, StaffDep
from cartwise.commerce.vouchers import service
from cartwise.commerce.vouchers.models import VoucherCreate, VoucherPublic
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["vouchers"], responses=PROBLEM_RESPONSES)


@router.get("/vouchers", response_model=list[VoucherPublic])
def list_vouchers(
    _staff: StaffDep,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[VoucherPublic]:
    """Vouchers, newest first (staff)."""
    return [
        VoucherPublic.model_validate(v, from_attributes=True)
        for v in service.list_vouchers(session=session, offset=offset, limit=limit)
    ]


@router.post("/vouchers", response_model=VoucherPublic, status_code=status.HTTP_201_CREATED)
def create_voucher(data: VoucherCreate, _staff: StaffDep, session: SessionDep) -> VoucherPublic:
    """Create a voucher (staff); codes are case-insensitive and stored upper-case."""
    voucher = service.create_voucher(session=session, data=data)
    return VoucherPublic.model_validate(voucher, from_attributes=True)
