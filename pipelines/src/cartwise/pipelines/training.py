"""The glue between the feature store and the model areas: build a Source, train, gate.

``cartwise.models`` never imports the features member, so this is where the Feast store is
built (from the feature settings) and handed to the areas. The CLI, ``make demo`` and the
Prefect flows all train through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cartwise.features.settings import FeatureSettings
    from cartwise.models.source import Source


def ground_truth_dir(settings: FeatureSettings) -> Path | None:
    """Where ``cartwise data synth`` left the hidden truth of the generated shop, if anywhere."""
    for candidate in (settings.var_dir / "synth" / "ground_truth",):
        if candidate.is_dir():
            return candidate
    return None


def model_source(settings: FeatureSettings | None = None) -> Source:
    """A models Source over the exported facts and the applied Feast store.

    Raises ``FileNotFoundError`` when nothing has been exported yet (run
    ``cartwise features export && cartwise features build && cartwise features apply``, or the
    ``refresh-features`` flow).
    """
    from cartwise.features import store
    from cartwise.features.settings import get_feature_settings
    from cartwise.models.source import Source

    settings = settings or get_feature_settings()
    exports = settings.exports_dir
    if not (exports / "order_lines").is_dir():
        raise FileNotFoundError(
            f"no exported facts under {exports}: run `cartwise flows run refresh-features` "
            "(or `cartwise features export`, `build`, `apply`) first"
        )
    store.ensure_tables(settings)
    return Source(
        facts_dir=exports, store=store.get_store(settings), truth_dir=ground_truth_dir(settings)
    )


def resolve_areas(area: str) -> list[str]:
    """``all`` → every area in order; one known area → ``[area]``; else ``ValueError``."""
    from cartwise.models.areas import AREAS, spec

    if area == "all":
        return list(AREAS)
    return [spec(area).area]


def describe_versions() -> list[dict[str, Any]]:
    """One row per area: the registered model's champion and challenger with their metric."""
    from cartwise.models import tracking
    from cartwise.models.areas import AREAS

    rows: list[dict[str, Any]] = []
    for spec in AREAS.values():
        row: dict[str, Any] = {"area": spec.area, "model": spec.model_name, "metric": spec.metric}
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            mv = tracking.current(spec.model_name, alias)
            if mv is None:
                row[alias] = None
                continue
            score = (mv.tags or {}).get(f"metric.{spec.metric}")
            row[alias] = {"version": int(mv.version), "score": score, "tags": dict(mv.tags or {})}
        rows.append(row)
    return rows


__all__ = ["describe_versions", "ground_truth_dir", "model_source", "resolve_areas"]
