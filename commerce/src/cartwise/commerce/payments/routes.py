"""HTTP routes of the payments domain."""

from __future__ import annotations

from fastapi import APIRouter

from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["payments"], responses=PROBLEM_RESPONSES)
