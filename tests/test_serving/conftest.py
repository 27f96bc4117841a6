"""Fixtures of the serving tests: settings reaching the trained shop, and a service's champion.

A module defines its own ``service`` fixture (one service per module, so the model loads
once); ``model`` is the champion that service loaded.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.test_serving.services_support import REDIS_URL, run


@pytest.fixture(scope="module")
def overrides(trained_shop: Any) -> dict[str, Any]:
    """Settings overrides reaching the shop, with the prediction cache on the test Redis."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    out: dict[str, Any] = trained_shop.overrides(redis_url=REDIS_URL)
    return out


@pytest.fixture(scope="module")
def model(service: Any) -> Any:
    """The champion the module's service loaded."""
    return run(service.model(None))
