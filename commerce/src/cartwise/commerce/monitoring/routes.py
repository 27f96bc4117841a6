"""HTTP routes of the monitoring domain."""

from __future__ import annotations

from fastapi import APIRouter

from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["monitoring"], responses=PROBLEM_RESPONSES)
