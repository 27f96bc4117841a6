"""The data the quality protocols run on, built once and cached under ``var/bench/``.

``bench/quality.py`` hands a :class:`BenchData` to each area's ``evaluate.benchmark``. The models
member never imports commerce or features, so this bench module does that work for it:

- :meth:`BenchData.online_retail_cleaned`: the importer's cleaned Online Retail frame;
- :meth:`BenchData.online_retail_source`: the full Online Retail imported into a SQLite commerce
  database, exported to the facts layout, feature tables built and Feast applied: a models
  :class:`~cartwise.models.source.Source` over real data, so the areas train on Feast features
  exactly as in production (about 90 s the first time, then read from the cache);
- :meth:`BenchData.synth_source`: a generated shop (facts, ground truth, features, Feast);
- :meth:`BenchData.creditcard_csv`: the labelled credit-card fraud sample.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "var" / "bench"


def _resolve(data: Path) -> Path:
    return data if data.is_absolute() else (ROOT / data).resolve()


@dataclass(eq=False)  # hashable by identity, so the cached methods work
class BenchData:
    """A datasets folder (``online_retail/``, ``creditcard_fraud/``) plus cached derived data."""

    folder: Path
    cache: Path = CACHE

    def __post_init__(self) -> None:
        self.folder = _resolve(Path(self.folder))

    def online_retail_path(self) -> Path:
        """The Online Retail Parquet (or the folder the importer accepts)."""
        from cartwise.commerce.importing.online_retail import resolve_input

        for candidate in (self.folder / "online_retail", self.folder):
            with contextlib.suppress(FileNotFoundError, ValueError):
                return Path(resolve_input(candidate))
        raise FileNotFoundError(f"no Online Retail data under {self.folder}")

    def creditcard_csv(self) -> Path:
        """The credit-card fraud sample CSV."""
        for candidate in (
            self.folder / "creditcard_fraud" / "creditcard_sample.csv",
            self.folder / "creditcard_sample.csv",
        ):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no creditcard_fraud/creditcard_sample.csv under {self.folder}")

    @functools.cache  # noqa: B019 - one BenchData per run; the frame is reused by every area
    def online_retail_cleaned(self) -> pd.DataFrame:
        """The importer's cleaned rows (no duplicates, product codes only, positive prices)."""
        from cartwise.commerce.importing.online_retail import (
            ImportSummary,
            clean,
            normalize,
            read_frame,
        )

        path = self.online_retail_path()
        _, raw = read_frame(path)
        return clean(normalize(raw), ImportSummary(path=str(path)))

    def _key(self, path: Path, extra: dict[str, Any]) -> str:
        digest = hashlib.sha256(f"{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:10]

    def online_retail_source(self) -> Any:
        """Online Retail as a models Source with Feast over it (imported once, then cached)."""
        path = self.online_retail_path()
        folder = self.cache / f"online_retail-{self._key(path, {'v': 1})}"
        settings = _feature_settings(folder, "bench_online_retail")
        if not (folder / "ready").is_file():
            from sqlmodel import Session

            from cartwise.commerce.importing.online_retail import import_online_retail
            from cartwise.commerce.migrations_api import upgrade
            from cartwise.features.export import export_facts
            from cartwise.features.tables import build_feature_tables
            from cartwise.platform.db import make_engine

            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            upgrade(settings.effective_database_url)
            engine = make_engine(settings.effective_database_url, settings)
            with Session(engine) as session:
                import_online_retail(session=session, path=path)
            export_facts(engine, settings.exports_dir)
            engine.dispose()
            build_feature_tables(settings.exports_dir, settings.tables_dir)
            _apply(settings)
            (folder / "ready").write_text("ok\n")
        return _source(settings)

    def synth_source(self, **config: Any) -> Any:
        """A generated shop (``SynthConfig(**config)``, start fixed by default) as a Source."""
        from datetime import date

        from cartwise.features.synth import SynthConfig, synth
        from cartwise.features.tables import build_feature_tables

        config.setdefault("start", date(2026, 1, 1))
        synth_config = SynthConfig(**config)
        digest = hashlib.sha256(
            json.dumps(asdict(synth_config), sort_keys=True, default=str).encode()
        )
        # A change to the generator or the feature tables invalidates the cached shop.
        for path in sorted(_code_files()):
            digest.update(path.read_bytes())
        key = digest.hexdigest()[:10]
        folder = self.cache / f"synth-{key}"
        settings = _feature_settings(folder, f"bench_synth_{key}")
        if not (folder / "ready").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            synth(synth_config, to="parquet", out=settings.exports_dir)
            build_feature_tables(settings.exports_dir, settings.tables_dir)
            _apply(settings)
            (folder / "ready").write_text("ok\n")
        return _source(settings)


def _code_files() -> list[Path]:
    import cartwise.features

    package = Path(next(iter(cartwise.features.__path__)))
    return [*package.glob("synth/*.py"), package / "tables.py", package / "facts.py"]


def _feature_settings(folder: Path, project: str) -> Any:
    from cartwise.features.settings import FeatureSettings

    return FeatureSettings(
        env="development",
        var_dir=folder,
        database_url=f"sqlite:///{folder / 'cartwise.db'}",
        features_dir=folder / "features",
        feast_project=project,
        feast_online_store="sqlite",
        feast_registry_url=None,
        log_level="WARNING",
    )


def _apply(settings: Any) -> None:
    from cartwise.features import store

    with contextlib.redirect_stdout(io.StringIO()):
        store.apply(settings)


def _source(settings: Any) -> Any:
    from cartwise.features import store
    from cartwise.models.source import Source

    return Source(facts_dir=settings.exports_dir, store=store.get_store(settings))


__all__ = ["BenchData"]
