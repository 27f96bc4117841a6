"""Import Feast without typeguard's import-time instrumentation.

Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles the
source of every decorated class when its module is imported: about 3.5 s of the 11 s that
``import feast`` took here, paid by every process that opens the store (each Serve replica, each
``cartwise`` step, each notebook kernel). typeguard's documentation calls the decorator a
development aid and makes it a no-op under ``python -O``; :func:`prepare` makes it a no-op the
same way, before Feast is first imported. Feast is the only installed package that uses
typeguard. ``CARTWISE_FEAST_TYPECHECK=1`` keeps the checks (when debugging a call into Feast).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["prepare"]


def _typechecked(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` as under ``python -O``: the target itself."""
    return _typechecked if target is None else target


def prepare() -> None:
    """Call before the first ``import feast`` of the process (later calls do nothing)."""
    if "feast" in sys.modules or os.environ.get("CARTWISE_FEAST_TYPECHECK") == "1":
        return
    import typeguard

    typeguard.typechecked = _typechecked
