"""Every ML endpoint over real HTTP through Ray Serve, on the trained shop.

The Serve application (ingress + the five model deployments) runs on a copy of the trained
shop's database with its MLflow champions and Feast online store (``serve_app`` in conftest).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.test_e2e.conftest import ServeApp
from tests.test_e2e.test_shopper_journey import (
    _login,
    _problem,
    _register,
    check_out_one,
)

pytestmark = pytest.mark.e2e

AREAS = ("recommend", "search", "fraud", "customers", "demand")


def _admin(http: httpx.Client, app: ServeApp) -> dict[str, str]:
    return _login(http, app.admin_email, app.admin_password)


def _served(body: dict[str, Any]) -> None:
    """The answer came from a trained model, not a baseline."""
    assert body["fallback"] is False, body.get("fallback_reason")
    assert body["model"]["version"] >= 1


def _answer(http: httpx.Client, path: str, **kwargs: Any) -> dict[str, Any]:
    """The model's answer to a GET: a shopper call on a busy 2-core runner may miss its deadline
    (and get the baseline, flagged; tested elsewhere), so try a few times."""
    body: dict[str, Any] = {}
    for _ in range(8):
        r = http.get(path, **kwargs)
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["fallback"]:
            break
        time.sleep(0.25)
    _served(body)
    return body


def _catalog(app: ServeApp) -> list[dict[str, Any]]:
    """Active products of the generated shop with their category and stock."""
    engine = create_engine(app.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT p.id, p.category_id, v.sku, "
                    "COALESCE(s.on_hand - s.reserved, 0) AS available "
                    "FROM product p JOIN variant v ON v.product_id = p.id "
                    "LEFT JOIN stock_level s ON s.sku = v.sku "
                    "WHERE p.status = 'active'"
                )
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def test_recommendations_similar_and_complements(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        _, shopper = _register(http, "recs")
        home = _answer(http, "/api/v1/recommendations", params={"k": 8}, headers=shopper)
        assert 0 < len(home["items"]) <= 8
        assert all(item["in_stock"] for item in home["items"])
        product_id = home["items"][0]["product_id"]

        similar = _answer(http, f"/api/v1/products/{product_id}/similar", params={"k": 5})
        ids = [i["product_id"] for i in similar["items"]]
        assert ids
        assert product_id not in ids

        r = http.post("/api/v1/carts", headers=shopper)
        cart_id = r.json()["id"]
        detail = http.get(f"/api/v1/products/{product_id}").json()
        sku = detail["variants"][0]["sku"]
        r = http.post(
            f"/api/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1}, headers=shopper
        )
        assert r.status_code == 200, r.text
        comp = http.get(f"/api/v1/carts/{cart_id}/complements", headers=shopper)
        assert comp.status_code == 200, comp.text
        assert product_id not in [i["product_id"] for i in comp.json()["items"]]
        # Somebody else's cart does not exist for this shopper.
        _, other = _register(http, "other")
        _problem(http.get(f"/api/v1/carts/{cart_id}/complements", headers=other), 404)
        _problem(http.get("/api/v1/recommendations", params={"k": 0}), 422)


def test_session_views_steer_the_next_recommendations_within_a_second(
    serve_app: ServeApp,
) -> None:
    catalog = [p for p in _catalog(serve_app) if p["available"] > 0 and p["category_id"]]
    by_category = Counter(p["category_id"] for p in catalog)
    category, _ = by_category.most_common(1)[0]
    in_category = [p for p in catalog if p["category_id"] == category][:3]
    session_id = f"rt-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        events = [
            {
                "type": "view",
                "session_id": session_id,
                "product_id": p["id"],
                "client_ts": datetime.now(UTC).isoformat(),
            }
            for p in in_category
        ]
        r = http.post("/api/v1/events", json={"events": events})
        assert r.status_code == 202, r.text
        sent = time.monotonic()
        share = 0.0
        body: dict[str, Any] = {}
        while time.monotonic() - sent < 1.0:
            body = http.get(
                "/api/v1/recommendations", params={"session_id": session_id, "k": 5}
            ).json()
            cats = [
                p["category_id"]
                for p in catalog
                if p["id"] in {i["product_id"] for i in body["items"]}
            ]
            share = sum(c == category for c in cats) / max(len(body["items"]), 1)
            if body.get("strategy") == "session" and share >= 0.6:
                break
            time.sleep(0.05)
        assert body.get("strategy") == "session", body
        assert share >= 0.6, body


def test_search_suggest_and_analytics(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        session_id = f"search-{uuid.uuid4().hex[:10]}"
        first = http.get("/api/v1/search/suggest", params={"q": "a", "k": 5})
        assert first.status_code == 200, first.text
        # A word the search model knows (its suggestions come from its own catalogue), then the
        # same word with a letter dropped.
        words = [
            w
            for prefix in "abcdefghilmnoprstw"
            for hit in http.get("/api/v1/search/suggest", params={"q": prefix}).json()[
                "suggestions"
            ]
            for w in hit["text"].lower().split()
            if len(w) >= 7 and w.isalpha()
        ]
        assert words, "the model suggests product names"
        word = Counter(words).most_common(1)[0][0]
        typo = word[:3] + word[4:]
        found = _answer(http, "/api/v1/search", params={"q": typo, "session_id": session_id})
        assert found["items"], found
        assert found["did_you_mean"] == word
        assert "<mark>" in found["items"][0]["highlight"]
        assert found["facets"]["category"]
        suggest = http.get("/api/v1/search/suggest", params={"q": word[:3]})
        assert suggest.status_code == 200
        assert suggest.json()["suggestions"]
        _problem(http.get("/api/v1/search", params={"q": ""}), 422)

        # The click on the first result is attributed to the logged search.
        click = {
            "type": "click",
            "session_id": session_id,
            "product_id": found["items"][0]["product_id"],
            "position": 0,
            "query": found["query"],
            "properties": {"search_id": found["search_id"]},
            "client_ts": datetime.now(UTC).isoformat(),
        }
        assert http.post("/api/v1/events", json={"events": [click]}).status_code == 202
        admin = _admin(http, serve_app)
        _problem(http.get("/api/v1/analytics/search"), 401)
        stats = http.get("/api/v1/analytics/search", headers=admin)
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["searches"] >= 2
        assert body["ctr"] > 0
        assert body["mrr"] > 0


def test_staff_insights_and_planning(serve_app: ServeApp) -> None:
    catalog = _catalog(serve_app)
    with httpx.Client(base_url=serve_app.url, timeout=60) as http:
        admin = _admin(http, serve_app)
        _, shopper = _register(http, "nosy")
        _problem(http.get("/api/v1/analytics/segments", headers=shopper), 403)

        segments = http.get("/api/v1/analytics/segments", headers=admin)
        assert segments.status_code == 200, segments.text
        assert len(segments.json()["segments"]) >= 2
        churn = http.get("/api/v1/analytics/churn-risk", params={"limit": 5}, headers=admin)
        assert churn.status_code == 200, churn.text
        risky = churn.json()["customers"]
        assert 0 < len(risky) <= 5
        probabilities = [c["churn_probability"] for c in risky]
        assert probabilities == sorted(probabilities, reverse=True)
        insight = http.get(f"/api/v1/customers/{risky[0]['customer_id']}/insights", headers=admin)
        assert insight.status_code == 200, insight.text
        assert 0.0 <= insight.json()["churn_probability"] <= 1.0
        cohorts = http.get("/api/v1/analytics/cohorts", headers=admin)
        assert cohorts.status_code == 200, cohorts.text

        sku = next(p["sku"] for p in catalog if p["available"] > 0)
        forecast = http.get("/api/v1/inventory/forecast", params={"sku": sku}, headers=admin)
        assert forecast.status_code == 200, forecast.text
        assert len(forecast.json()["days"]) == 28
        _problem(
            http.get("/api/v1/inventory/forecast", params={"sku": "NOPE-0"}, headers=admin), 404
        )
        reorder = http.get("/api/v1/inventory/reorder-suggestions", headers=admin)
        assert reorder.status_code == 200, reorder.text
        suppliers = http.get("/api/v1/suppliers/performance", headers=admin)
        assert suppliers.status_code == 200, suppliers.text
        assert suppliers.json()["suppliers"]

        status = http.get("/api/v1/ml/status", headers=admin)
        assert status.status_code == 200, status.text


def test_checkout_is_scored_by_the_fraud_model(serve_app: ServeApp) -> None:
    catalog = [p for p in _catalog(serve_app) if p["available"] > 5]
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        admin = _admin(http, serve_app)
        _, shopper = _register(http, "buyer")
        # The scorer has a 0.25 s deadline; on a loaded machine one call may miss it, which
        # the fallback rule answers (and says so). A deadline miss may be retried, four times
        # at most; any other fallback (an error, no model) fails the test.
        for attempt in range(5):
            r = check_out_one(http, shopper, catalog[attempt]["sku"])
            # An ordinary one-line order of a new account is never blocked.
            assert r.status_code == 201, r.text
            order_id = r.json()["order"]["id"]
            order = http.get(f"/api/v1/orders/{order_id}", headers=admin).json()
            risk = order["risk"]
            assert risk["decision"] in ("allow", "review"), risk
            if not risk["fallback"]:
                break
            missed = risk["reasons"][-1]["text"]
            assert missed.startswith(
                ("fraud model not used: deadline", "fraud model not used: timeout")
            ), risk
        assert risk["fallback"] is False, risk
        assert risk["model_version"]
        assert 0.0 <= risk["score"] <= 1.0
        assert risk["reasons"]
        assert all(r["feature"] != "model" for r in risk["reasons"])
        mine = http.get(f"/api/v1/orders/{order_id}", headers=shopper).json()
        assert mine.get("risk") is None


def test_experiment_assigns_sticky_variants_and_reports(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        admin = _admin(http, serve_app)
        r = http.post(
            "/api/v1/experiments",
            json={
                "name": f"recs-{uuid.uuid4().hex[:6]}",
                "surface": "recommendations",
                "variants": [
                    {"name": "control", "model": "champion", "share": 0.5},
                    {"name": "popular", "model": "baseline:popularity", "share": 0.5},
                ],
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        experiment = r.json()
        try:
            seen: dict[str, str] = {}
            for i in range(12):
                sid = f"ab-{i}-{uuid.uuid4().hex[:6]}"
                for _ in range(2):
                    body = http.get(
                        "/api/v1/recommendations", params={"session_id": sid, "k": 4}
                    ).json()
                    variant = body["experiment"]["variant"]
                    assert seen.setdefault(sid, variant) == variant
            assert set(seen.values()) == {"control", "popular"}
            results = http.get(f"/api/v1/experiments/{experiment['id']}/results", headers=admin)
            assert results.status_code == 200, results.text
            exposures = {v["name"]: v["exposures"] for v in results.json()["variants"]}
            assert sum(exposures.values()) == 24
        finally:
            http.post(f"/api/v1/experiments/{experiment['id']}/stop", headers=admin)


def test_every_model_deployment_has_a_running_replica(serve_app: ServeApp) -> None:
    from ray import serve

    from cartwise.serving.app import APP_NAME

    deployments = serve.status().applications[APP_NAME].deployments
    for name in ("Recommender", "Search", "FraudScorer", "CustomerInsights", "DemandPlanner"):
        assert sum(deployments[name].replica_states.values()) >= 1, name


def test_metrics_of_the_serve_app_report_the_served_models(serve_app: ServeApp) -> None:
    """/metrics of the Serve ingress: its own counters plus the model replicas' status."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        r = http.get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    with httpx.Client(base_url=serve_app.url, timeout=30) as http:
        before = scrape(http)
        body = _answer(http, "/api/v1/recommendations", params={"k": 4})
        model = body["model"]
        after = scrape(http)
    series = (
        "cartwise_ml_predictions_total",
        frozenset(
            {"area": "recommend", "model": model["name"], "version": str(model["version"])}.items()
        ),
    )
    # This ingress counted the model's answer, under the version that gave it.
    assert after.get(series, 0.0) >= before.get(series, 0.0) + 1
    route = frozenset(
        {"method": "GET", "route": "/api/v1/recommendations", "status": "200"}.items()
    )
    assert after.get(("cartwise_http_requests_total", route), 0.0) >= 1
    # Read from the five model replicas' status calls: all of them are up, and the
    # recommender's served version is the one that answered.
    for area in ("recommend", "search", "fraud", "customers", "demand"):
        assert after.get(("cartwise_ml_model_available", frozenset({"area": area}.items()))) == 1.0
    served = after.get(
        (
            "cartwise_ml_model_version",
            frozenset({"area": "recommend", "model": model["name"]}.items()),
        )
    )
    assert served == float(model["version"])
