"""HTTP routes of the vouchers domain."""

from __future__ import annotations

from fastapi import APIRouter

from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["vouchers"], responses=PROBLEM_RESPONSES)
