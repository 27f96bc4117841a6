"""One Prefect test harness (a temporary API server and database) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness; its server takes ~20 s on 2 cores, so it starts once."""
    from prefect.testing.utilities import prefect_test_harness

    # No internet here: the harness server would otherwise try to send telemetry heartbeats.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield
