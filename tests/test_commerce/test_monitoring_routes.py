"""Staff monitoring routes: drift reports with their file links, retraining decisions, access."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.monitoring import service
from cartwise.commerce.monitoring.models import DecisionOutcome, MonitoringReport, RetrainDecision
from cartwise.platform.types import utcnow
from tests.conftest import Account, assert_problem


def _seed(session: Session) -> tuple[list[int], list[int]]:
    """Three reports (fraud, demand, fraud, a minute apart) and a decision on each."""
    start = utcnow() - timedelta(hours=1)
    reports, decisions = [], []
    plan = [
        ("fraud", 1, 0.1, DecisionOutcome.no_drift),
        ("demand", 2, 0.2, DecisionOutcome.not_enough_data),
        ("fraud", 1, 0.8, DecisionOutcome.retrained_promoted),
    ]
    for i, (area, version, share, outcome) in enumerate(plan):
        stamp = f"2026120{i + 1}T000000Z_v{version}"
        report = service.add_report(
            session=session,
            report=MonitoringReport(
                area=area,
                model_name=area,
                model_version=version,
                created_at=start + timedelta(minutes=i),
                window_start=start - timedelta(days=14),
                window_end=start,
                reference_rows=500,
                current_rows=300,
                drift_share=share,
                drifted_features=int(share * 10),
                n_features=10,
                quality={"precision": 0.5} if area == "fraud" else {},
                features={
                    "order_amount": {"drift_score": 0.01, "drifted": True, "importance": 0.3}
                },
                breach=share > 0.5,
                breach_reasons=["drift share over the threshold"] if share > 0.5 else [],
                html_key=f"monitoring/{area}/{stamp}/report.html",
                json_key=f"monitoring/{area}/{stamp}/report.json",
            ),
        )
        assert report.id is not None
        reports.append(report.id)
        decision = service.add_decision(
            session=session,
            decision=RetrainDecision(
                area=area,
                created_at=start + timedelta(minutes=i, seconds=30),
                outcome=outcome,
                reason=f"reason {i}",
                numbers={"drift_share": share},
                report_id=report.id,
                version_before=version,
                version_after=version + 1
                if outcome == DecisionOutcome.retrained_promoted
                else None,
            ),
        )
        assert decision.id is not None
        decisions.append(decision.id)
    return reports, decisions


def test_reports_newest_first_filtered_paged_with_links(
    client: TestClient, session: Session, staff: Account
) -> None:
    reports, _ = _seed(session)
    r = client.get("/api/v1/monitoring/reports", headers=staff.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)
    assert [x["id"] for x in page["items"]] == reports[::-1]
    newest = page["items"][0]
    assert (newest["area"], newest["drift_share"], newest["breach"]) == ("fraud", 0.8, True)
    assert newest["features"]["order_amount"]["importance"] == 0.3
    # Links come from the storage port (local storage in the tests: under /media).
    assert newest["html_url"].endswith(newest["html_key"])
    assert newest["json_url"].endswith("/report.json")
    assert newest["html_url"] != newest["json_url"]

    fraud = client.get("/api/v1/monitoring/reports?area=fraud", headers=staff.headers).json()
    assert [x["id"] for x in fraud["items"]] == [reports[2], reports[0]]
    assert fraud["total"] == 2
    paged = client.get("/api/v1/monitoring/reports?limit=1&offset=1", headers=staff.headers)
    assert ([x["id"] for x in paged.json()["items"]], paged.json()["total"]) == ([reports[1]], 3)
    none = client.get("/api/v1/monitoring/reports?area=search", headers=staff.headers).json()
    assert (none["items"], none["total"]) == ([], 0)

    one = client.get(f"/api/v1/monitoring/reports/{reports[1]}", headers=staff.headers)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["area"], body["model_version"], body["quality"]) == ("demand", 2, {})
    assert body["html_url"].endswith(
        f"monitoring/demand/{body['html_key'].split('/')[2]}/report.html"
    )


def test_decisions_filtered_by_area_and_outcome(
    client: TestClient, session: Session, staff: Account
) -> None:
    reports, decisions = _seed(session)
    page = client.get("/api/v1/monitoring/decisions", headers=staff.headers).json()
    assert [d["id"] for d in page["items"]] == decisions[::-1]
    latest = page["items"][0]
    assert (latest["outcome"], latest["report_id"], latest["version_before"]) == (
        "retrained_promoted",
        reports[2],
        1,
    )
    assert (latest["version_after"], latest["numbers"]) == (2, {"drift_share": 0.8})

    fraud = client.get("/api/v1/monitoring/decisions?area=fraud", headers=staff.headers).json()
    assert [d["id"] for d in fraud["items"]] == [decisions[2], decisions[0]]
    promoted = client.get(
        "/api/v1/monitoring/decisions?outcome=retrained_promoted", headers=staff.headers
    ).json()
    assert ([d["id"] for d in promoted["items"]], promoted["total"]) == ([decisions[2]], 1)
    both = client.get(
        "/api/v1/monitoring/decisions?area=demand&outcome=no_drift", headers=staff.headers
    ).json()
    assert (both["items"], both["total"]) == ([], 0)


def test_monitoring_is_staff_only_and_inputs_are_checked(
    client: TestClient, session: Session, customer: Account, staff: Account, admin: Account
) -> None:
    reports, _ = _seed(session)
    for path in (
        "/api/v1/monitoring/reports",
        f"/api/v1/monitoring/reports/{reports[0]}",
        "/api/v1/monitoring/decisions",
    ):
        assert_problem(client.get(path), 401)
        assert_problem(client.get(path, headers=customer.headers), 403)
        assert client.get(path, headers=admin.headers).status_code == 200
    assert_problem(client.get("/api/v1/monitoring/reports/999999", headers=staff.headers), 404)
    assert_problem(client.get("/api/v1/monitoring/reports/0", headers=staff.headers), 422)
    assert_problem(
        client.get("/api/v1/monitoring/decisions?outcome=maybe", headers=staff.headers), 422
    )
    assert_problem(client.get("/api/v1/monitoring/reports?limit=0", headers=staff.headers), 422)
    assert_problem(client.get("/api/v1/monitoring/reports?area=Fraud!", headers=staff.headers), 422)
    assert_problem(client.get("/api/v1/monitoring/decisions?offset=-1", headers=staff.headers), 422)


def test_routes_are_documented(make_settings: Callable[..., Any], tmp_path: Path) -> None:
    from cartwise.commerce import create_app

    # The schema does not depend on the database: one backend is enough.
    app = create_app(make_settings(database_url=f"sqlite:///{tmp_path / 'docs.db'}"))
    spec = app.openapi()
    for path in (
        "/api/v1/monitoring/reports",
        "/api/v1/monitoring/reports/{report_id}",
        "/api/v1/monitoring/decisions",
    ):
        operation = spec["paths"][path]["get"]
        assert operation["description"] or operation["summary"]
        assert "monitoring" in operation["tags"]
