"""Feast imports without typeguard's recompilation, unless CARTWISE_FEAST_TYPECHECK=1 asks."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import cartwise.features.store, feast.feature_view, typeguard\n"
    "from cartwise.features.feast_import import _typechecked\n"
    # An instrumented function carries typeguard's checks; the plain one is Feast's source.
    "init = feast.feature_view.FeatureView.__init__\n"
    "print(typeguard.typechecked is _typechecked, 'TypeCheckMemo' in init.__code__.co_names)"
)


def _probe(**env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_feast_is_imported_without_typeguard_instrumentation() -> None:
    assert _probe(CARTWISE_FEAST_TYPECHECK="") == "True False"


def test_the_checks_stay_when_asked_for() -> None:
    assert _probe(CARTWISE_FEAST_TYPECHECK="1") == "False True"
