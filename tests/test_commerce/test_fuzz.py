"""Schemathesis over /openapi.json: no 5xx and no response that breaks its schema.

Runs on the real PostgreSQL, which enforces column lengths and types that SQLite does not, with
a staff token so staff routes are exercised too, and a bounded number of examples per route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import _truncate_all

MAX_EXAMPLES = 12


@pytest.fixture
def fuzz_app(pg_database: str, make_settings: Callable[..., Any]) -> FastAPI:
    """The app on PostgreSQL with a little data and no rate limits."""
    from cartwise.commerce import create_app

    _truncate_all(pg_database)
    return create_app(make_settings(database_url=pg_database, rate_limit_enabled=False))


@pytest.fixture
def fuzz_schema(fuzz_app: FastAPI) -> Any:
    """The app's own OpenAPI schema, loaded over ASGI."""
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.fixture
def staff_headers(fuzz_app: FastAPI) -> dict[str, str]:
    """An admin bearer token, so schemathesis reaches staff routes."""
    from sqlmodel import Session

    from cartwise.commerce.customers.models import User
    from cartwise.platform.auth import Role, issue_access_token

    with Session(fuzz_app.state.engine) as s:
        user = User(email="fuzz-admin@example.com", hashed_password="!", role=Role.admin)
        s.add(user)
        s.commit()
        s.refresh(user)
        assert user.id is not None
        token = issue_access_token(fuzz_app.state.settings, user.id, Role.admin).token
    return {"Authorization": f"Bearer {token}"}


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_fuzz(case: Any, staff_headers: dict[str, str]) -> None:
    case.call_and_validate(
        headers=staff_headers,
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
    )
