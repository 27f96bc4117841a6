"""The feature log: the live feature rows a model service scored, for drift monitoring.

Serving appends what it scored (the model input row, the prediction, the entity key) to a
:class:`FeatureLogger`; a background thread writes the buffered rows to the platform object
storage as Parquet, one file per flush and day::

    feature_logs/<area>/date=YYYY-MM-DD/<host>-<pid>-<uuid>.parquet

with the columns ``logged_at`` (UTC), ``area``, ``model_name``, ``model_version``, ``key``
(a string, or null), ``prediction`` and one float column per feature. :func:`read` gathers the
rows of a time window back into one frame; the drift check (:func:`cartwise.models.monitoring
.check`) prefers them to features rebuilt from the offline store.

The request path only ever appends to an in-memory buffer under a lock: a logger never blocks
on storage, never raises into the caller, and never holds more than ``feature_log_max_rows``
rows (the oldest are dropped and counted). Rows are sampled with ``feature_log_sample``; a
flush happens every ``feature_log_flush_rows`` rows or ``feature_log_flush_seconds`` seconds,
on :meth:`FeatureLogger.flush`, on :meth:`FeatureLogger.close` and at interpreter exit.

Example::

    logger = FeatureLogger("fraud", "fraud", settings)
    logger.log(3, [{"order_amount": 12.0, ...}], [0.04], ["o-17"])
    frame = read("fraud", start, end, settings)
"""

from __future__ import annotations

import atexit
import io
import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from cartwise.models.settings import ModelSettings
    from cartwise.platform.storage import Storage

log = logging.getLogger(__name__)

PREFIX = "feature_logs"
# The columns every log file has; features are the other columns.
META_COLUMNS: tuple[str, ...] = (
    "logged_at",
    "area",
    "model_name",
    "model_version",
    "key",
    "prediction",
)
CONTENT_TYPE = "application/vnd.apache.parquet"


def _float(value: Any) -> float:
    """A feature value as a float (None, text and non-finite values become NaN)."""
    if value is None or isinstance(value, str):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _day_key(area: str, day: date) -> str:
    return f"{PREFIX}/{area}/date={day.isoformat()}/"


class FeatureLogger:
    """Buffer the rows a service scored and write them to object storage in the background."""

    def __init__(
        self,
        area: str,
        model_name: str,
        settings: ModelSettings | None = None,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        background: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        from cartwise.models.settings import get_model_settings

        if not area or "/" in area:
            raise ValueError(f"invalid area {area!r}")
        self.area = area
        self.model_name = model_name
        self.settings = settings or get_model_settings()
        self.enabled = bool(self.settings.feature_log_enabled)
        self.flush_rows = int(self.settings.feature_log_flush_rows)
        self.flush_seconds = float(self.settings.feature_log_flush_seconds)
        self.sample = float(self.settings.feature_log_sample)
        self.max_rows = int(self.settings.feature_log_max_rows)
        self._storage = storage
        self._clock = clock
        self._now = now
        self._rng = rng or random.Random()
        self._background = background
        # (logged_at, model_version, key, prediction, features)
        self._buffer: deque[tuple[datetime, int | None, str | None, float, dict[str, float]]]
        self._buffer = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = clock()
        self._source = f"{socket.gethostname()}-{os.getpid()}".replace("/", "_")
        self.logged = 0  # rows accepted into the buffer
        self.sampled_out = 0  # rows skipped by sampling
        self.dropped = 0  # rows dropped because the buffer was full
        self.written = 0  # rows written to storage
        self.failed = 0  # rows lost to a failed write
        self.files: list[str] = []  # keys written by this logger (the last 100)
        if self.enabled:
            ref = weakref.ref(self)
            atexit.register(_flush_at_exit, ref)

    # ------------------------------------------------------------------ request path

    def log(
        self,
        model_version: int | None,
        rows: Sequence[Mapping[str, Any]],
        predictions: Sequence[float] | Iterable[float],
        keys: Sequence[str | int | None] | None = None,
    ) -> int:
        """Buffer scored rows (sampled); returns how many were kept. Never raises or blocks
        on storage: the caller is answering a request."""
        if not self.enabled:
            return 0
        try:
            preds = list(predictions)
            ids: list[str | int | None] = list(keys) if keys is not None else [None] * len(rows)
            if not len(rows) == len(preds) == len(ids):
                raise ValueError(
                    f"rows ({len(rows)}), predictions ({len(preds)}) and keys ({len(ids)}) "
                    "differ in length"
                )
            stamp = self._now()
            version = None if model_version is None else int(model_version)
            kept = []
            skipped = 0
            for row, pred, key in zip(rows, preds, ids, strict=True):
                if self.sample < 1.0 and self._rng.random() >= self.sample:
                    skipped += 1
                    continue
                features = {
                    str(name): _float(value)
                    for name, value in row.items()
                    if str(name) not in META_COLUMNS
                }
                kept.append(
                    (stamp, version, None if key is None else str(key), _float(pred), features)
                )
            with self._lock:
                self.sampled_out += skipped
                if not kept:
                    return 0
                for item in kept:
                    if len(self._buffer) >= self.max_rows:
                        self._buffer.popleft()
                        self.dropped += 1
                    self._buffer.append(item)
                self.logged += len(kept)
                full = len(self._buffer) >= self.flush_rows
            self._ensure_thread()
            if full:
                self._wake.set()
            return len(kept)
        except Exception:
            log.warning("feature log (%s): could not log rows", self.area, exc_info=True)
            return 0

    def pending(self) -> int:
        """Rows waiting in the buffer."""
        with self._lock:
            return len(self._buffer)

    def stats(self) -> dict[str, Any]:
        """Counters for a status page."""
        return {
            "enabled": self.enabled,
            "sample": self.sample,
            "pending": self.pending(),
            "logged": self.logged,
            "sampled_out": self.sampled_out,
            "dropped": self.dropped,
            "written": self.written,
            "failed": self.failed,
            "files": len(self.files),
        }

    # ------------------------------------------------------------------ flushing

    @property
    def storage(self) -> Storage:
        """The platform object storage (local folder embedded, S3 in production)."""
        if self._storage is None:
            from cartwise.platform.storage import get_storage

            self._storage = get_storage(self.settings)
        return self._storage

    def due(self) -> bool:
        """Whether a flush is due: enough rows, or rows older than ``flush_seconds``."""
        with self._lock:
            n = len(self._buffer)
        if n == 0:
            return False
        return n >= self.flush_rows or self._clock() - self._last_flush >= self.flush_seconds

    def maybe_flush(self) -> list[str]:
        """Flush if :meth:`due`; returns the keys written."""
        return self.flush() if self.due() else []

    def flush(self) -> list[str]:
        """Write every buffered row now (one file per day); returns the keys written."""
        with self._flush_lock:
            with self._lock:
                items = list(self._buffer)
                self._buffer.clear()
            self._last_flush = self._clock()
            if not items:
                return []
            frame = pd.DataFrame.from_records(
                [
                    {
                        "logged_at": stamp,
                        "area": self.area,
                        "model_name": self.model_name,
                        "model_version": version,
                        "key": key,
                        "prediction": pred,
                        **features,
                    }
                    for stamp, version, key, pred, features in items
                ]
            )
            frame = _typed(frame)
            written: list[str] = []
            for day, part in frame.groupby(frame["logged_at"].dt.date, sort=True):
                key = f"{_day_key(self.area, day)}{self._source}-{uuid.uuid4().hex}.parquet"
                try:
                    buf = io.BytesIO()
                    part.reset_index(drop=True).to_parquet(buf, index=False)
                    self.storage.put(key, buf.getvalue(), CONTENT_TYPE)
                except Exception:
                    self.failed += len(part)
                    log.warning(
                        "feature log (%s): writing %s rows failed; they are lost",
                        self.area,
                        len(part),
                        exc_info=True,
                    )
                    continue
                self.written += len(part)
                written.append(key)
            self.files = [*self.files, *written][-100:]
            return written

    def _ensure_thread(self) -> None:
        if not self._background or self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"feature-log-{self.area}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Woken early when a flush by rows is due; else at the flush interval.
            self._wake.wait(timeout=self.flush_seconds)
            self._wake.clear()
            try:
                self.maybe_flush()
            except Exception:
                log.warning("feature log (%s): flush failed", self.area, exc_info=True)

    def close(self) -> list[str]:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        return self.flush()


def _flush_at_exit(ref: weakref.ref[FeatureLogger]) -> None:
    logger = ref()
    if logger is not None:
        try:
            logger.close()
        except Exception:
            log.warning("feature log: final flush failed", exc_info=True)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable column types: UTC timestamps, nullable version, text keys, float features."""
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    frame["model_version"] = pd.array(frame["model_version"], dtype="Int64")
    frame["key"] = frame["key"].astype("string")
    for name in frame.columns:
        if name not in META_COLUMNS or name == "prediction":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


# ---------------------------------------------------------------------- reading


def _list_keys(storage: Storage, prefix: str) -> list[str]:
    """The log files under ``prefix`` (recursively)."""
    return [key for key in storage.list(prefix) if key.endswith(".parquet")]


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def day_keys(area: str, start: Any, end: Any, *, storage: Storage) -> list[str]:
    """The log files of the days ``start`` to ``end`` (inclusive days, UTC)."""
    first, last = _utc(start).date(), _utc(end).date()
    keys: list[str] = []
    day = first
    while day <= last:
        keys += _list_keys(storage, _day_key(area, day))
        day += timedelta(days=1)
    return keys


def read(
    area: str,
    start: Any,
    end: Any,
    settings: ModelSettings | None = None,
    *,
    storage: Storage | None = None,
) -> pd.DataFrame:
    """The logged rows of ``area`` with ``start <= logged_at < end`` (UTC), oldest first.

    Only the day partitions of the window are read. An empty frame (with the meta columns)
    when nothing was logged.
    """
    if storage is None:
        from cartwise.models.settings import get_model_settings
        from cartwise.platform.storage import get_storage

        storage = get_storage(settings or get_model_settings())
    lo, hi = _utc(start), _utc(end)
    frames = []
    for key in day_keys(area, lo, hi, storage=storage):
        try:
            frames.append(pd.read_parquet(io.BytesIO(storage.get(key))))
        except KeyError:
            continue  # deleted between the listing and the read
    if not frames:
        return _typed(pd.DataFrame({name: [] for name in META_COLUMNS}))
    frame = pd.concat(frames, ignore_index=True)
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    keep = (frame["logged_at"] >= lo) & (frame["logged_at"] < hi)
    return frame[keep].sort_values("logged_at", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- retention


def prune(
    retention_days: int,
    settings: ModelSettings | None = None,
    *,
    storage: Storage | None = None,
    now: Any = None,
) -> list[str]:
    """Delete the log files of every day older than ``retention_days`` (whole UTC days before
    ``now - retention_days``, every area); returns the deleted keys.

    The drift check reads the last ``monitor_window_days``: a retention at least that long
    never removes rows a check still needs.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    if storage is None:
        from cartwise.models.settings import get_model_settings
        from cartwise.platform.storage import get_storage

        storage = get_storage(settings or get_model_settings())
    cutoff = _utc(now if now is not None else datetime.now(UTC)) - timedelta(days=retention_days)
    deleted: list[str] = []
    for key in _list_keys(storage, f"{PREFIX}/"):
        found = _DAY.search(key)
        if found is None or date.fromisoformat(found.group(1)) >= cutoff.date():
            continue
        storage.delete(key)
        deleted.append(key)
    return deleted


_DAY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")

__all__ = ["META_COLUMNS", "PREFIX", "FeatureLogger", "day_keys", "prune", "read"]
