"""Who runs an export job: a thread in this process, or the ``export`` Prefect deployment.

The port is one method, ``submit(job_id)``. The default adapter runs
:func:`cartwise.commerce.exports.service.run_job` (the same function the ``export`` flow runs)
on a background thread. With ``CARTWISE_EXPORTS_RUNNER=prefect`` the job is handed to the
Prefect server instead, over its REST API with plain httpx (commerce never imports prefect):
the ``export`` deployment gets a flow run with ``job_id`` as its parameter, and a worker or
``cartwise flows serve`` picks it up.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from cartwise.platform.settings import Settings
from cartwise.platform.storage import Storage

log = logging.getLogger(__name__)


class ExportRunner(Protocol):
    """Starts the work of an export job that has been recorded as queued."""

    def submit(self, job_id: int) -> str:
        """Start the job; returns the runner's handle on it."""


class ThreadRunner:
    """Runs jobs on daemon threads in this process (the embedded default)."""

    def __init__(self, engine: Engine, storage: Storage) -> None:
        self.engine = engine
        self.storage = storage
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def _run(self, job_id: int) -> None:
        from cartwise.commerce.exports.service import ExportFailed, run_job

        try:
            with Session(self.engine, expire_on_commit=False) as session:
                run_job(session=session, storage=self.storage, job_id=job_id)
        except ExportFailed:
            pass  # recorded on the job already
        except Exception:  # a thread has no caller to raise to
            log.exception("export job %s crashed", job_id)

    def submit(self, job_id: int) -> str:
        """Start the job on a new thread."""
        thread = threading.Thread(target=self._run, args=(job_id,), name=f"export-{job_id}")
        thread.daemon = True
        with self._lock:
            self._threads[job_id] = thread
        thread.start()
        return thread.name

    def join(self, job_id: int, timeout: float | None = None) -> None:
        """Wait for a submitted job's thread (tests and shutdown)."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)


class PrefectRunnerError(RuntimeError):
    """The Prefect API refused or could not be reached."""


class PrefectRunner:
    """Creates a flow run of the ``export`` deployment through the Prefect REST API."""

    def __init__(
        self,
        api_url: str,
        deployment: str = "export/on-demand",
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_url:
            raise ValueError("CARTWISE_PREFECT_API_URL must be set for the prefect export runner")
        flow_name, sep, deployment_name = deployment.partition("/")
        if not sep or not flow_name or not deployment_name:
            raise ValueError(f"deployment must be 'flow/deployment', not {deployment!r}")
        self.api_url = api_url.rstrip("/")
        self.flow_name = flow_name
        self.deployment_name = deployment_name
        self.timeout = timeout
        self.transport = transport
        self._deployment_id: str | None = None

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=self.timeout, transport=self.transport)

    def deployment_id(self, client: httpx.Client) -> str:
        """The deployment's id, looked up by name once."""
        if self._deployment_id is None:
            r = client.get(f"/deployments/name/{self.flow_name}/{self.deployment_name}")
            if r.status_code == 404:
                raise PrefectRunnerError(
                    f"no Prefect deployment {self.flow_name}/{self.deployment_name}; "
                    "start `cartwise flows serve`"
                )
            r.raise_for_status()
            self._deployment_id = str(r.json()["id"])
        return self._deployment_id

    def submit(self, job_id: int) -> str:
        """Create a flow run of the deployment for this job; returns the flow run id."""
        try:
            with self._client() as client:
                deployment = self.deployment_id(client)
                r = client.post(
                    f"/deployments/{deployment}/create_flow_run",
                    json={
                        "parameters": {"job_id": job_id},
                        "idempotency_key": f"cartwise-export-{job_id}",
                        "tags": ["cartwise", "export"],
                    },
                )
                r.raise_for_status()
                return str(r.json()["id"])
        except httpx.HTTPError as exc:
            raise PrefectRunnerError(f"Prefect API: {exc}") from exc


def make_runner(settings: Settings, engine: Engine, storage: Storage) -> ExportRunner:
    """The adapter chosen by ``CARTWISE_EXPORTS_RUNNER``."""
    if settings.exports_runner == "prefect":
        return PrefectRunner(settings.prefect_api_url, settings.export_deployment)
    return ThreadRunner(engine, storage)


__all__ = [
    "ExportRunner",
    "PrefectRunner",
    "PrefectRunnerError",
    "ThreadRunner",
    "make_runner",
]
