"""``monitor_drift``'s decisions: thresholds, quality floors, not enough data, cooldown, records.

The rules run on hand-built ``DriftCheck`` objects (the real dataclass of the models member), and
the recorded decisions go through the real monitoring service into SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from cartwise.commerce.monitoring import service
from cartwise.commerce.monitoring.models import DecisionOutcome, MonitoringReport, RetrainDecision
from cartwise.models.monitoring import DriftCheck
from cartwise.models.settings import ModelSettings
from cartwise.pipelines import monitoring as rules
from cartwise.pipelines.flows.monitoring import _jsonable, report_prefix

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def _check(
    area: str = "fraud",
    *,
    share: float | None = 0.1,
    rows: int = 500,
    quality: dict[str, float] | None = None,
    drifted: tuple[str, ...] = (),
) -> DriftCheck:
    names = ("order_amount", "account_age_days", "payment_attempts", "is_new_country")
    features = {
        name: {
            "drift_score": 0.001 if name in drifted else 0.6,
            "drifted": name in drifted,
            "importance": {"order_amount": 0.4, "account_age_days": 0.1}.get(name),
        }
        for name in names
    }
    return DriftCheck(
        area=area,
        model_name=area,
        model_version=3,
        window_start=NOW - timedelta(days=14),
        window_end=NOW,
        reference_rows=800,
        current_rows=rows,
        drift_share=share,
        drifted_features=len(drifted),
        n_features=len(names),
        prediction_drift=0.05,
        quality=quality or {},
        features=features,
        html=b"<html></html>",
        json=b"{}",
        notes=[],
    )


def _thresholds(**overrides: Any) -> rules.Thresholds:
    settings = ModelSettings(
        monitor_drift_thresholds={"fraud": 0.3},
        monitor_quality_floors={"fraud": {"recall": 0.5}, "demand": {"wape": 0.8}},
        monitor_min_rows=100,
        retrain_cooldown_hours=12,
        **overrides,
    )
    return rules.Thresholds.for_area("fraud", settings)


def test_settings_per_area_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTWISE_MONITOR_DRIFT_THRESHOLDS", '{"fraud": 0.25, "demand": 0.6}')
    monkeypatch.setenv("CARTWISE_MONITOR_QUALITY_FLOORS", '{"demand": {"wape": 0.7}}')
    monkeypatch.setenv("CARTWISE_RETRAIN_COOLDOWN_HOURS", "6")
    settings = ModelSettings()
    assert (settings.drift_threshold("fraud"), settings.drift_threshold("demand")) == (0.25, 0.6)
    # An area left out keeps the default threshold; floors merge over the defaults.
    assert settings.drift_threshold("search") == settings.monitor_default_drift_threshold
    assert settings.quality_floors("demand") == {"wape": 0.7}
    assert set(settings.quality_floors("fraud")) == {"precision", "recall"}
    demand = rules.Thresholds.for_area("demand", settings)
    assert (demand.drift_share, demand.cooldown) == (0.6, timedelta(hours=6))
    monkeypatch.setenv("CARTWISE_MONITOR_DRIFT_THRESHOLDS", '{"fraud": 1.5}')
    with pytest.raises(ValueError, match="drift-share thresholds"):
        ModelSettings()


def test_drift_share_over_its_threshold_is_a_breach() -> None:
    thresholds = _thresholds()
    calm = rules.decide(_check(share=0.25, drifted=("order_amount",)), thresholds, now=NOW)
    assert (calm.breach, calm.outcome, calm.retrain) == (False, DecisionOutcome.no_drift, False)
    assert "0.25 within the threshold 0.30" in calm.reason

    # Exactly at the threshold is not over it; just above is.
    assert not rules.decide(_check(share=0.3), thresholds, now=NOW).breach
    drifted = _check(share=0.5, drifted=("payment_attempts", "order_amount"))
    verdict = rules.decide(drifted, thresholds, now=NOW)
    assert (verdict.breach, verdict.outcome, verdict.retrain) == (True, None, True)
    assert verdict.breach_reasons == ["drift share 0.50 (2/4 features) over the threshold 0.30"]
    # The drifted features are listed most important first, with the numbers that decided.
    top = [f["feature"] for f in verdict.numbers["top_drifted"]]
    assert top == ["order_amount", "payment_attempts"]
    assert verdict.numbers["drift_share"] == 0.5
    assert verdict.numbers["drift_share_threshold"] == 0.3

    # Another area with its own (default) threshold does not breach on the same share.
    other = rules.Thresholds.for_area("demand", ModelSettings())
    assert not rules.decide(_check("demand", share=0.5), other, now=NOW).breach


def test_the_weighted_measure_ignores_drift_in_features_the_model_does_not_use() -> None:
    thresholds = _thresholds(monitor_drift_measures={"fraud": "weighted"})
    assert thresholds.drift_measure == "weighted"
    # Half the features drift, but they carry a tenth of the importance: no breach.
    minor = _check(share=0.5, drifted=("payment_attempts", "account_age_days"))
    minor.importance_weighted_drift = 0.1
    calm = rules.decide(minor, thresholds, now=NOW)
    assert (calm.breach, calm.outcome) == (False, DecisionOutcome.no_drift)
    assert calm.reason.startswith("importance-weighted drift 0.10 (drift share 0.50) within")
    assert calm.numbers["drift_measure"] == "weighted"
    # One drifting feature that carries most of the importance: a breach.
    major = _check(share=0.25, drifted=("order_amount",))
    major.importance_weighted_drift = 0.8
    verdict = rules.decide(major, thresholds, now=NOW)
    assert verdict.retrain
    assert verdict.breach_reasons[0].startswith("importance-weighted drift 0.80")
    # A version without importance falls back to the share of drifted features.
    bare = _check(share=0.5, drifted=("payment_attempts", "account_age_days"))
    assert rules.decide(bare, thresholds, now=NOW).breach_reasons == [
        "drift share 0.50 (2/4 features) over the threshold 0.30"
    ]
    # The same checks under the default measure: the share decides.
    assert rules.decide(minor, _thresholds(), now=NOW).breach
    assert not rules.decide(major, _thresholds(), now=NOW).breach


def test_quality_below_its_floor_or_above_its_ceiling_is_a_breach() -> None:
    thresholds = _thresholds()
    low = rules.decide(_check(quality={"recall": 0.4, "precision": 0.9}), thresholds, now=NOW)
    assert low.retrain
    assert low.breach_reasons == ["recall 0.4000 below its floor 0.5000"]
    ok = rules.decide(_check(quality={"recall": 0.6, "precision": 0.9}), thresholds, now=NOW)
    assert (ok.outcome, ok.breach) == (DecisionOutcome.no_drift, False)
    assert "precision, recall within bounds" in ok.reason
    # Labels not arrived (metric missing or NaN): nothing to compare, no breach.
    assert not rules.decide(_check(quality={"recall": float("nan")}), thresholds, now=NOW).breach
    # Too few labels to judge: a recall over 3 frauds, or over 40 labelled rows, is noise.
    few = {"recall": 0.0, "labelled_rows": 300.0, "fraud_rate": 0.01}
    verdict = rules.decide(_check(quality=few), thresholds, now=NOW)
    assert (verdict.breach, verdict.outcome) == (False, DecisionOutcome.no_drift)
    assert "quality not judged (3 labelled positives, fewer than 10)" in verdict.reason
    assert verdict.numbers["quality_not_judged"] == "3 labelled positives, fewer than 10"
    short = {"recall": 0.0, "labelled_rows": 40.0}
    assert not rules.decide(_check(quality=short), thresholds, now=NOW).breach
    enough = {"recall": 0.1, "labelled_rows": 300.0, "fraud_rate": 0.1}
    assert rules.decide(_check(quality=enough), thresholds, now=NOW).breach_reasons == [
        "recall 0.1000 below its floor 0.5000"
    ]

    # WAPE is an error: its bound is a ceiling.
    demand = rules.Thresholds.for_area(
        "demand", ModelSettings(monitor_quality_floors={"demand": {"wape": 0.8}})
    )
    assert rules.quality_breaches({"wape": 0.9}, demand.quality_floors, demand.ceilings) == [
        "wape 0.9000 above its ceiling 0.8000"
    ]
    assert rules.quality_breaches({"wape": 0.5}, demand.quality_floors, demand.ceilings) == []
    both = rules.decide(
        _check("demand", share=0.9, quality={"wape": 1.2}), demand, now=NOW
    ).breach_reasons
    assert len(both) == 2
    assert both[1].startswith("wape 1.2000 above")


def test_too_few_rows_is_not_enough_data_even_with_drift() -> None:
    thresholds = _thresholds()
    verdict = rules.decide(_check(share=0.9, rows=40, drifted=("order_amount",)), thresholds)
    assert (verdict.outcome, verdict.retrain) == (DecisionOutcome.not_enough_data, False)
    assert verdict.breach  # the drift is seen and said, but not acted on
    assert "40 current rows, fewer than the 100 needed" in verdict.reason
    assert "drift share 0.90" in verdict.reason
    # No reference sample (no drift share): no verdict either, and the check's notes say why.
    blind = _check(share=None, rows=500)
    blind.notes.append("fraud v3 has no reference sample")
    verdict = rules.decide(blind, thresholds)
    assert verdict.outcome == DecisionOutcome.not_enough_data
    assert "no drift share measured" in verdict.reason
    assert "no reference sample" in verdict.reason


def test_cooldown_stops_a_retrain_storm() -> None:
    thresholds = _thresholds()  # 12 h
    drifted = _check(share=0.8, drifted=("order_amount",))
    recent = [
        rules.PastDecision(DecisionOutcome.cooldown, NOW - timedelta(hours=1)),
        rules.PastDecision(DecisionOutcome.retrained_not_promoted, NOW - timedelta(hours=3)),
        rules.PastDecision(DecisionOutcome.retrained_promoted, NOW - timedelta(hours=30)),
    ]
    verdict = rules.decide(drifted, thresholds, recent, now=NOW)
    assert (verdict.outcome, verdict.retrain, verdict.breach) == (
        DecisionOutcome.cooldown,
        False,
        True,
    )
    assert "retrained 3.0 h ago, inside the 12.0 h cooldown (9.0 h left)" in verdict.reason
    # Forcing ignores the cooldown (a person asked), not the breach.
    assert rules.decide(drifted, thresholds, recent, now=NOW, force=True).retrain
    assert not rules.decide(_check(share=0.1), thresholds, recent, now=NOW, force=True).retrain
    # Once the cooldown is over, the breach retrains again.
    later = NOW + timedelta(hours=10)
    assert rules.decide(drifted, thresholds, recent, now=later).retrain
    # Cooldown and no-drift decisions do not start a cooldown; a failed retraining does.
    quiet = [rules.PastDecision(DecisionOutcome.cooldown, NOW - timedelta(minutes=5))]
    assert rules.decide(drifted, thresholds, quiet, now=NOW).retrain
    broke = [
        rules.PastDecision(DecisionOutcome.failed, NOW - timedelta(hours=2), retrain_attempted=True)
    ]
    assert rules.decide(drifted, thresholds, broke, now=NOW).outcome == DecisionOutcome.cooldown
    check_failed = [rules.PastDecision(DecisionOutcome.failed, NOW - timedelta(hours=2))]
    assert rules.decide(drifted, thresholds, check_failed, now=NOW).retrain


def test_after_retraining_the_gate_decides_the_outcome() -> None:
    verdict = rules.decide(_check(share=0.8, drifted=("order_amount",)), _thresholds(), now=NOW)
    trained = {"version": 4, "metrics": {"pr_auc": 0.71}}
    outcome, reason, numbers = rules.after_retraining(
        verdict, trained, {"outcome": "promoted", "reason": "pr_auc 0.71 vs 0.52: +36%"}
    )
    assert outcome == DecisionOutcome.retrained_promoted
    assert reason.startswith("drift share 0.80")
    assert "retrained v4, promoted: pr_auc 0.71 vs 0.52" in reason
    assert (numbers["trained_version"], numbers["gate"]["outcome"]) == (4, "promoted")
    kept, why, _ = rules.after_retraining(
        verdict, trained, {"outcome": "kept", "reason": "pr_auc 0.50 vs 0.52: below margin"}
    )
    assert kept == DecisionOutcome.retrained_not_promoted
    assert "not promoted: pr_auc 0.50" in why
    reason, numbers = rules.failed(verdict, RuntimeError("Ray is gone"), "train")
    assert reason.endswith("train failed: RuntimeError: Ray is gone")
    assert numbers["failed_stage"] == "train"


def _record(session: Session, check: DriftCheck, verdict: rules.Verdict, outcome: Any) -> int:
    report = service.add_report(
        session=session,
        report=MonitoringReport(
            area=check.area,
            model_name=check.model_name,
            model_version=check.model_version,
            window_start=check.window_start,
            window_end=check.window_end,
            current_rows=check.current_rows,
            drift_share=check.drift_share,
            features=_jsonable(check.features),
            breach=verdict.breach,
            breach_reasons=verdict.breach_reasons,
        ),
    )
    decision = service.add_decision(
        session=session,
        decision=RetrainDecision(
            area=check.area,
            outcome=outcome,
            reason=verdict.reason,
            numbers=_jsonable(verdict.numbers),
            report_id=report.id,
            version_before=check.model_version,
        ),
    )
    assert decision.id is not None
    return decision.id


def test_each_outcome_is_recorded_with_its_reason_and_numbers(session: Session) -> None:
    thresholds = _thresholds()
    cases = {
        DecisionOutcome.no_drift: _check(share=0.1),
        DecisionOutcome.not_enough_data: _check(share=0.9, rows=10),
        DecisionOutcome.cooldown: _check(share=0.9, drifted=("order_amount",)),
    }
    history = [
        rules.PastDecision(
            DecisionOutcome.retrained_promoted, datetime.now(UTC) - timedelta(hours=1)
        )
    ]
    ids = {}
    for expected, check in cases.items():
        verdict = rules.decide(check, thresholds, history)
        assert verdict.outcome == expected
        ids[expected] = _record(session, check, verdict, verdict.outcome)
    drifted = _check(share=0.9, quality={"recall": float("nan")}, drifted=("order_amount",))
    verdict = rules.decide(drifted, thresholds, [])
    outcome, reason, numbers = rules.after_retraining(
        verdict, {"version": 4, "metrics": {}}, {"outcome": "kept", "reason": "below margin"}
    )
    retrained = replace_reason(verdict, reason, numbers)
    ids[outcome] = _record(session, drifted, retrained, outcome)

    session.expire_all()
    stored, total = service.list_decisions(session=session, area="fraud")
    assert total == 4
    by_outcome = {DecisionOutcome(d.outcome): d for d in stored}
    assert set(by_outcome) == {*cases, DecisionOutcome.retrained_not_promoted}
    assert "fewer than the 100 needed" in by_outcome[DecisionOutcome.not_enough_data].reason
    assert "cooldown" in by_outcome[DecisionOutcome.cooldown].reason
    kept = by_outcome[DecisionOutcome.retrained_not_promoted]
    assert kept.numbers["gate"] == {"outcome": "kept", "reason": "below margin"}
    assert kept.numbers["drift_share_threshold"] == 0.3
    # NaN quality never reaches the JSON column.
    assert kept.numbers["quality"] == {}
    assert by_outcome[DecisionOutcome.no_drift].numbers["current_rows"] == 500
    # The cooldown reads these rows back: the retraining just recorded starts one.
    recent = service.recent_decisions(session=session, area="fraud")
    past = [rules.PastDecision(DecisionOutcome(d.outcome), d.created_at) for d in recent]
    again = rules.decide(drifted, thresholds, past)
    assert again.outcome == DecisionOutcome.cooldown
    # The report a decision was taken on finds it (a re-run does not decide twice).
    report_id = by_outcome[DecisionOutcome.cooldown].report_id
    assert report_id is not None
    found = service.decision_for_report(session=session, report_id=report_id)
    assert found is not None
    assert found.id == ids[DecisionOutcome.cooldown]


def replace_reason(verdict: rules.Verdict, reason: str, numbers: dict[str, Any]) -> rules.Verdict:
    """The verdict as recorded after retraining (final reason and numbers)."""
    return rules.Verdict(
        verdict.area, verdict.breach, verdict.breach_reasons, None, reason, numbers
    )


def test_report_keys_and_reuse_lookup(session: Session, tmp_path: Path) -> None:
    check = _check()
    prefix = report_prefix(check.area, check.model_version, check.window_end)
    assert prefix == "monitoring/fraud/20261203T100000Z_v3"
    verdict = rules.decide(check, _thresholds())
    _record(session, check, verdict, verdict.outcome)
    found = service.find_report(
        session=session,
        area="fraud",
        model_version=3,
        window_start=check.window_start,
        window_end=check.window_end,
    )
    assert found is not None
    assert found.drift_share == 0.1
    other_version = service.find_report(
        session=session,
        area="fraud",
        model_version=4,
        window_start=check.window_start,
        window_end=check.window_end,
    )
    assert other_version is None
    assert _jsonable({"a": float("inf"), "b": [1, 2.5], "c": NOW}) == {
        "a": None,
        "b": [1, 2.5],
        "c": NOW.isoformat(),
    }


def test_all_means_every_monitored_area_and_unknown_areas_are_refused() -> None:
    from cartwise.models.areas import AREAS
    from cartwise.models.monitoring.areas import ADAPTERS
    from cartwise.pipelines.flows.monitoring import monitored_areas

    everything = monitored_areas("all")
    assert "fraud" in everything
    assert everything == [a for a in AREAS if a in ADAPTERS]
    assert monitored_areas("fraud") == ["fraud"]
    with pytest.raises(ValueError, match="unknown area"):
        monitored_areas("weather")
    for area in set(AREAS) - set(ADAPTERS):
        with pytest.raises(ValueError, match="no drift monitoring"):
            monitored_areas(area)


def test_a_rerun_reuses_the_stored_report_and_its_decision(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cartwise.commerce.tables import metadata
    from cartwise.models.settings import get_model_settings
    from cartwise.pipelines.flows import monitoring as flow
    from cartwise.platform.db import get_engine

    media = tmp_path / "media"
    monkeypatch.setenv("CARTWISE_DATABASE_URL", db_url)
    monkeypatch.setenv("CARTWISE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CARTWISE_STORAGE_LOCAL_PATH", str(media))
    get_model_settings.cache_clear()
    try:
        metadata.create_all(get_engine(get_model_settings()))
        check = _check(share=0.9, drifted=("order_amount",))
        first = flow.store_report_task.fn(check, True, ["drift share 0.90 over 0.30"])
        assert first["reused"] is False
        html = media / first["html_key"]
        assert html.read_bytes() == check.html
        assert (media / first["json_key"]).read_bytes() == check.json
        # The same version and window again (a re-run after a crash): nothing stored twice.
        again = flow.store_report_task.fn(check, True, ["drift share 0.90 over 0.30"])
        assert (again["reused"], again["id"]) == (True, first["id"])
        assert flow.earlier_decision_task.fn(first["id"]) is None
        recorded = flow.record_task.fn(
            "fraud", "cooldown", "in the cooldown", {"drift_share": 0.9}, first["id"], 3, None
        )
        earlier = flow.earlier_decision_task.fn(first["id"])
        assert earlier is not None
        assert (earlier["id"], earlier["outcome"]) == (recorded["id"], "cooldown")
        since = datetime.now(UTC) - timedelta(hours=1)
        assert [h["outcome"] for h in flow.history_task.fn("fraud", since)] == ["cooldown"]
        # Files lost after the row was written: put back under the same row.
        html.unlink()
        mended = flow.store_report_task.fn(check, True, [])
        assert (mended["reused"], mended["id"]) == (False, first["id"])
        assert html.exists()
        # A new champion version is a new report, in its own folder.
        newer = _check(share=0.2)
        newer.model_version = 4
        other = flow.store_report_task.fn(newer, False, [])
        assert other["id"] != first["id"]
        assert other["html_key"].endswith("_v4/report.html")
    finally:
        get_model_settings.cache_clear()
