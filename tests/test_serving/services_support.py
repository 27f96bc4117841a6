"""Shared by the model-service tests (``test_services_*.py``): Redis, quiet config, ``run``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

REDIS_URL = os.environ.get("CARTWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# No background alias checks: tests that switch registries in one process would race them.
QUIET = {"reload_interval_s": 3600}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one service call to completion."""
    return asyncio.run(coro)
