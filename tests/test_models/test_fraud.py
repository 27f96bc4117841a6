"""Fraud: fraud_v1 training rows, the classifier + autoencoder stack, calibration, thresholds,
reasons, the torch-free predictor through the registry, and tuning + gating.

The learning tests use a small generated shop with a raised fraud rate (the shared
``synth_source`` holds only ~27 fraud orders), built once for the module with its own Feast store.
"""

from __future__ import annotations

import math
import pickle
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cartwise.models.fraud import data as fraud_data
from cartwise.models.fraud.calibrate import review_threshold, threshold_for_precision
from cartwise.models.fraud.metrics import brier, pr_auc, recall_at_fpr
from cartwise.models.fraud.predict import FraudScorer
from cartwise.models.fraud.train import train, trainset
from cartwise.models.fraud.tune import SPLIT

CONFIG = {"epochs": 12, "batch_size": 64, "seed": 0, "pos_weight": 5.0}


@pytest.fixture(scope="module")
def fraud_source(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A generated shop with ~12% fraud (500 customers, 90 days) and an applied Feast store."""
    from cartwise.features import store
    from cartwise.features.settings import FeatureSettings
    from cartwise.features.synth import SynthConfig, synth
    from cartwise.features.tables import build_feature_tables
    from cartwise.models.source import Source

    root = tmp_path_factory.mktemp("fraud-source")
    settings = FeatureSettings(
        env="test",
        var_dir=root / "var",
        database_url=f"sqlite:///{root / 'unused.db'}",
        feast_project="models_fraud",
        log_level="WARNING",
    )
    config = SynthConfig(
        customers=500, days=90, seed=11, start=date(2026, 1, 1), products=80, fraud_rate=0.12
    )
    synth(config, to="parquet", out=settings.exports_dir)
    build_feature_tables(settings.exports_dir, settings.tables_dir)
    store.apply(settings)
    return Source(facts_dir=settings.exports_dir, store=store.get_store(settings))


@pytest.fixture(scope="module")
def parts(fraud_source: Any) -> list[fraud_data.Dataset]:
    """Train, validation and test parts of the shop by time."""
    dataset = fraud_data.load(fraud_source)
    return fraud_data.split(dataset, fraud_data.time_cuts(dataset.frame["event_timestamp"], SPLIT))


@pytest.fixture(scope="module")
def trained(parts: list[fraud_data.Dataset]) -> tuple[FraudScorer, dict[str, float]]:
    """The stack trained on the train part, stacked and thresholded on validation."""
    train_part, valid_part, _ = parts
    data = trainset(
        train_part.x,
        train_part.y,
        valid_part.x,
        valid_part.y,
        fraud_data.FEATURES,
        fraud_data.LOG_FEATURES,
        fraud_data.NON_NEGATIVE,
    )
    return train(CONFIG, data)


def _features(part: fraud_data.Dataset) -> pd.DataFrame:
    return part.frame[list(fraud_data.FEATURES)].reset_index(drop=True)


# ---------------------------------------------------------------------- metrics and helpers


def test_pr_auc_matches_sklearn_with_and_without_weights() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(float)
    score = rng.normal(size=400) + 1.5 * y
    weights = np.where(y == 1, 1.0, 7.5)
    assert pr_auc(y, score) == pytest.approx(average_precision_score(y, score))
    assert pr_auc(y, score, weights) == pytest.approx(
        average_precision_score(y, score, sample_weight=weights)
    )
    # Weighting the legitimate rows up lowers precision at every recall.
    assert pr_auc(y, score, weights) < pr_auc(y, score)
    assert math.isnan(pr_auc(np.zeros(5), np.arange(5.0)))


def test_recall_at_fpr_counts_frauds_above_the_legit_cut() -> None:
    y = np.array([0] * 100 + [1] * 4)
    score = np.r_[np.arange(100.0), [200.0, 150.0, 98.5, 10.0]]
    # 1% of 100 legit rows: one may be flagged, so the cut is the second-highest legit (98).
    assert recall_at_fpr(y, score, 0.01) == pytest.approx(3 / 4)


def test_threshold_for_precision_is_the_lowest_cut_reaching_the_target() -> None:
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    risk = np.linspace(1.0, 0.1, 10)
    assert threshold_for_precision(y, risk, 0.8, min_flagged=3) == pytest.approx(risk[4])
    assert threshold_for_precision(y, risk, 1.0, min_flagged=3) == pytest.approx(risk[2])
    assert math.isinf(threshold_for_precision(y, risk, 1.0, min_flagged=4))


def test_review_falls_back_to_the_desks_capacity_when_no_cut_is_precise_enough() -> None:
    rng = np.random.default_rng(3)
    risk = rng.random(1000)
    # Fraud scattered at random: no cut reaches 50 % precision.
    y = (rng.random(1000) < 0.03).astype(float)
    assert math.isinf(threshold_for_precision(y, risk, 0.5, min_flagged=3))
    threshold, rule = review_threshold(y, risk, 0.5, min_flagged=3, rate=0.02)
    assert rule == "capacity"
    assert (risk >= threshold).sum() == 20  # the riskiest 2 %
    # Without a capacity, nothing is reviewed; with a precise cut, the cut wins.
    assert review_threshold(y, risk, 0.5, rate=0.0) == (math.inf, "precision")
    precise = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    ranked = np.linspace(1.0, 0.1, 10)
    threshold, rule = review_threshold(precise, ranked, 0.8, rate=0.5)
    assert (threshold, rule) == (pytest.approx(ranked[4]), "precision")


# ---------------------------------------------------------------------- training rows


def test_training_rows_come_from_fraud_v1_with_request_data(fraud_source: Any) -> None:
    requests = fraud_data.order_requests(fraud_source)
    assert {"customer_id", "event_timestamp", *fraud_data.REQUEST} <= set(requests.columns)
    # A card-testing burst: orders minutes apart, so some see earlier ones within the hour.
    labels = fraud_data.labels(fraud_source).set_index("order_id")
    bursts = requests[requests["order_id"].map(labels["pattern"]) == "card_testing"]
    assert (bursts["orders_last_hour"] > 0).any()
    dataset = fraud_data.load(fraud_source)
    assert list(dataset.features) == list(fraud_data.FEATURES)
    assert np.isfinite(dataset.x).all()
    assert dataset.frame["event_timestamp"].is_monotonic_increasing
    assert 0.05 < dataset.y.mean() < 0.3
    # The on-demand view's velocity is the request's count.
    assert (dataset.frame["order_velocity_1h"] == dataset.frame["orders_last_hour"]).all()


def test_without_truth_training_rows_are_the_orders_with_known_outcomes(
    fraud_source: Any, tmp_path: Path
) -> None:
    from cartwise.models.source import Source

    truth = fraud_data.labels(fraud_source).set_index("order_id")
    # The same export seen as a production shop: no ground truth beside it.
    production = Source(
        facts_dir=fraud_source.facts_dir, store=fraud_source.store, truth_dir=tmp_path / "none"
    )
    dataset = fraud_data.load(production)
    assert dataset.info["labels"] == "outcomes"
    frame = dataset.frame
    assert set(frame["label_source"]) <= {"chargeback", "review", "matured"}
    assert frame["is_fraud"].any()
    # Every fraud label is a true fraud (a fraudulent chargeback); the young orders of the
    # last 30 days without one are left out, so there are fewer rows than orders.
    assert truth.loc[frame.loc[frame["is_fraud"], "order_id"], "is_fraud"].all()
    assert len(frame) < len(fraud_data.load(fraud_source).frame)
    matured = frame[frame["label_source"] == "matured"]
    assert not matured["is_fraud"].any()
    end = fraud_data.data_end(production)
    assert pd.to_datetime(matured["event_timestamp"], utc=True).max() <= end - pd.Timedelta(days=30)


# ---------------------------------------------------------------------- learning


def test_classifier_loss_falls_and_beats_the_base_rate(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, metrics = trained
    assert metrics["loss"] < 0.7 * metrics["loss_first"]
    assert metrics["ae_loss"] < metrics["ae_loss_first"]
    test = parts[2]
    assert test.y.sum() >= 3
    risk = scorer.risk(test.x)
    # A trivial scorer's PR-AUC is the fraud rate.
    assert pr_auc(test.y, risk) > max(3 * test.y.mean(), 0.5)


def test_autoencoder_scores_injected_anomalies_higher(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    test = parts[2]
    normal = _features(test)[test.y == 0].head(60).reset_index(drop=True)
    odd = normal.copy()
    odd["order_velocity_1h"] = 15
    odd["payment_attempts"] = 60
    odd["failed_payment_share_now"] = 0.9
    odd["amount_vs_avg"] = normal["amount_vs_avg"] * 40
    normal_scores = scorer.score(normal, reasons=0)["anomaly"].to_numpy()
    odd_scores = scorer.score(odd, reasons=0)["anomaly"].to_numpy()
    assert ((odd_scores > normal_scores).mean()) > 0.95
    assert np.median(odd_scores) > 0.95 > np.median(normal_scores)


def test_risk_is_a_calibrated_probability(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    held = pd.concat([parts[1].frame, parts[2].frame], ignore_index=True)
    scored = scorer.score(held[list(fraud_data.FEATURES)], reasons=0)
    risk = scored["risk"].to_numpy()
    assert ((risk >= 0) & (risk <= 1)).all()
    y = held["is_fraud"].to_numpy(dtype=float)
    # The classifier alone is trained with fraud weighted 5x: its probabilities run high.
    assert brier(y, risk) < brier(y, scored["classifier"].to_numpy())
    # Monotone-ish: the riskier half holds more fraud than the safer half.
    order = np.argsort(risk)
    half = len(order) // 2
    assert y[order[half:]].mean() > y[order[:half]].mean()


def test_thresholds_honour_the_target_precision_on_validation(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    valid = parts[1]
    thresholds = scorer.thresholds
    assert thresholds["review"] <= thresholds["block"]
    risk = scorer.risk(valid.x)
    assert math.isfinite(thresholds["review"])
    assert scorer.info["review_rule"] in {"precision", "capacity"}
    for name, target in (("review", 0.5), ("block", 0.9)):
        if name == "review" and scorer.info["review_rule"] == "capacity":
            # No cut reached the target: the riskiest 2 % are reviewed instead.
            assert (risk >= thresholds["review"]).mean() <= 0.05
            continue
        if math.isfinite(thresholds[name]):
            flagged = risk >= thresholds[name]
            assert flagged.sum() >= 3
            assert valid.y[flagged].mean() >= target
    decisions = scorer.decide(np.array([0.0, thresholds["review"], thresholds["block"]]))
    assert decisions[0] == "allow"
    assert decisions[1] in {"review", "block"}


def test_reasons_name_the_planted_feature(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    test = parts[2]
    rows = _features(test)[test.y == 0].head(5).reset_index(drop=True)
    planted = rows.copy()
    planted["order_velocity_1h"] = 12
    before = scorer.score(rows)["risk"].to_numpy()
    after = scorer.score(planted)
    assert (after["risk"].to_numpy() > before).all()
    for reasons in scorer.explain(planted, k=3):
        assert len(reasons) == 3
        assert reasons[0]["feature"] == "order_velocity_1h"
        assert reasons[0]["direction"] == "raises"
        assert reasons[0]["value"] == 12
    assert all(text.startswith("order_velocity_1h=12 (+") for text in after["reasons"])


# ---------------------------------------------------------------------- predictor


def test_predictor_refuses_malformed_input(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    good = _features(parts[2]).head(3)
    with pytest.raises(ValueError, match=r"missing feature columns.*order_velocity_1h"):
        scorer.predict(good.drop(columns=["order_velocity_1h"]))
    with pytest.raises(ValueError, match="NaN"):
        scorer.predict(good.assign(amount_vs_avg=[1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="must be numeric"):
        scorer.predict(good.assign(orders_lifetime=["a", "b", "c"]))
    with pytest.raises(ValueError, match="must not be negative"):
        scorer.predict(good.assign(payment_attempts=[-1, 0, 1]))
    with pytest.raises(ValueError, match="DataFrame"):
        scorer.predict(good.to_numpy())
    with pytest.raises(ValueError, match="k must be"):
        scorer.explain(good, k=0)
    # Numeric strings and extra context columns are fine.
    out = scorer.predict(good.astype(str).assign(customer_id=[1, 2, 3]))
    assert list(out.columns) == ["risk", "decision", "anomaly", "reasons"]


def test_predictor_is_torch_free_and_pickles(
    trained: tuple[FraudScorer, dict[str, float]], parts: list[fraud_data.Dataset]
) -> None:
    scorer, _ = trained
    copy = pickle.loads(pickle.dumps(scorer))  # noqa: S301 - our own bytes
    frame = _features(parts[2])
    pd.testing.assert_frame_equal(copy.score(frame), scorer.score(frame))
    for layers in (scorer.classifier, scorer.autoencoder):
        assert all(isinstance(w, np.ndarray) and isinstance(b, np.ndarray) for w, b, _ in layers)
    assert list(scorer.features) == list(fraud_data.FEATURES)


def test_register_and_load_by_alias_gives_the_same_scores(
    trained: tuple[FraudScorer, dict[str, float]],
    parts: list[fraud_data.Dataset],
    model_settings: Any,
) -> None:
    from cartwise.models import tracking

    scorer, _ = trained
    frame = _features(parts[2])
    version = tracking.register(
        "fraud",
        scorer,
        area="fraud",
        input_example=frame.head(5),
        metrics={"pr_auc": 0.5},
        feature_service="fraud_v1",
        settings=model_settings,
    )
    loaded = tracking.load("fraud", "challenger", settings=model_settings)
    assert loaded.version == int(version.version)
    expected = scorer.predict(frame)
    got = loaded.predict(frame)
    np.testing.assert_allclose(got["risk"].to_numpy(), expected["risk"].to_numpy())
    assert got["decision"].tolist() == expected["decision"].tolist()
    assert got["reasons"].tolist() == expected["reasons"].tolist()
    np.testing.assert_allclose(
        loaded.predictor.score(frame)["anomaly"], scorer.score(frame)["anomaly"]
    )
    with pytest.raises(ValueError):
        loaded.predict(frame.drop(columns=["account_age_days"]))


def test_holdout_metrics_score_the_block_decision() -> None:
    from cartwise.models.fraud.evaluate import holdout_metrics

    y = np.array([1, 1, 0, 0, 0, 1])
    risk = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    decision = np.array(["block", "block", "block", "allow", "allow", "review"])
    got = holdout_metrics(y, risk, decision)
    assert got["block_precision"] == pytest.approx(2 / 3)
    assert got["block_recall"] == pytest.approx(2 / 3)
    assert got["flag_recall"] == pytest.approx(1.0)
    assert got["pr_auc"] == pytest.approx(pr_auc(y, risk))


# ---------------------------------------------------------------------- tune and gate
