"""Suppliers and purchase orders: CRUD, roles, receiving through the stock ledger, over-receipt,
replayed and concurrent receipts, and the cancel rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from cartwise.commerce.inventory.models import MovementReason, StockMovement
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import make_variant, stock_of

S = "/api/v1/suppliers"
P = "/api/v1/purchase-orders"


def _supplier(client: TestClient, staff: Account, name: str = "Acme", lead: int = 5) -> int:
    r = client.post(
        S,
        json={"name": name, "email": "orders@acme.example", "lead_time_days": lead},
        headers=staff.headers,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _po(
    client: TestClient, staff: Account, supplier_id: int, lines: list[tuple[str, int]]
) -> dict[str, Any]:
    body = {
        "supplier_id": supplier_id,
        "lines": [{"sku": sku, "quantity": q, "unit_cost": "2.50"} for sku, q in lines],
    }
    r = client.post(P, json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _receive(
    client: TestClient, staff: Account, po_id: str, lines: dict[str, int], key: str | None
) -> Any:
    body: dict[str, Any] = {"lines": [{"sku": s, "quantity": q} for s, q in lines.items()]}
    if key is not None:
        body["receipt_id"] = key
    return client.post(f"{P}/{po_id}/receive", json=body, headers=staff.headers)


def _restocks(session: Session, sku: str) -> list[StockMovement]:
    session.expire_all()
    stmt = (
        select(StockMovement)
        .where(StockMovement.sku == sku, StockMovement.reason == MovementReason.restock)
        .order_by(col(StockMovement.id))
    )
    return list(session.exec(stmt))


def test_supplier_crud_and_roles(
    client: TestClient, session: Session, staff: Account, admin: Account, customer: Account
) -> None:
    sid = _supplier(client, staff)
    assert_problem(client.post(S, json={"name": "Acme"}, headers=staff.headers), 409)
    assert_problem(
        client.post(S, json={"name": "", "lead_time_days": -1}, headers=staff.headers), 422
    )
    other = _supplier(client, staff, "Bolt Wholesale", lead=9)
    r = client.patch(
        f"{S}/{sid}", json={"lead_time_days": 3, "is_active": False}, headers=staff.headers
    )
    assert r.status_code == 200, r.text
    assert (r.json()["lead_time_days"], r.json()["is_active"]) == (3, False)
    assert_problem(
        client.patch(f"{S}/{sid}", json={"name": "Bolt Wholesale"}, headers=staff.headers), 409
    )
    assert [s["name"] for s in client.get(S, headers=staff.headers).json()] == [
        "Acme",
        "Bolt Wholesale",
    ]
    assert [s["id"] for s in client.get(f"{S}?active=true", headers=staff.headers).json()] == [
        other
    ]
    assert client.get(f"{S}/{other}", headers=staff.headers).json()["lead_time_days"] == 9
    assert_problem(client.get(f"{S}/999999", headers=staff.headers), 404)

    # Customers are refused, anonymous callers must authenticate.
    variant = make_variant(session, stock=0)
    po_body = {
        "supplier_id": other,
        "lines": [{"sku": variant.sku, "quantity": 1, "unit_cost": "1"}],
    }
    for method, url, body in (
        ("GET", S, None),
        ("POST", S, {"name": "Sneaky"}),
        ("GET", f"{S}/{sid}", None),
        ("PATCH", f"{S}/{sid}", {"lead_time_days": 1}),
        ("DELETE", f"{S}/{sid}", None),
        ("GET", P, None),
        ("POST", P, po_body),
        ("GET", f"{P}/x", None),
        ("POST", f"{P}/x/cancel", None),
        ("POST", f"{P}/x/receive", {"lines": [{"sku": variant.sku, "quantity": 1}]}),
    ):
        assert_problem(client.request(method, url, json=body, headers=customer.headers), 403)
        assert_problem(client.request(method, url, json=body), 401)

    # Deleting is for admins, and only for suppliers without purchase orders.
    _po(client, staff, other, [(variant.sku, 1)])
    assert_problem(client.delete(f"{S}/{sid}", headers=staff.headers), 403)
    assert_problem(client.delete(f"{S}/{other}", headers=admin.headers), 409)
    assert client.delete(f"{S}/{sid}", headers=admin.headers).status_code == 204
    assert_problem(client.get(f"{S}/{sid}", headers=staff.headers), 404)


def test_receiving_raises_stock_through_the_ledger_once(
    client: TestClient, session: Session, staff: Account
) -> None:
    mug = make_variant(session, stock=2, name="Mug")
    jug = make_variant(session, stock=0, name="Jug")
    sid = _supplier(client, staff, lead=5)
    po = _po(client, staff, sid, [(mug.sku, 10), (jug.sku, 4)])
    assert po["status"] == "placed"
    assert po["total_cost"] == "35.00"
    placed = datetime.fromisoformat(po["placed_at"])
    assert datetime.fromisoformat(po["expected_at"]) - placed == timedelta(days=5)
    assert po["received_at"] is None

    r = _receive(client, staff, po["id"], {mug.sku: 6}, "delivery-1")
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers
    body = r.json()
    assert body["status"] == "partially_received"
    assert body["received_at"] is not None
    assert [
        (x["sku"], x["quantity_received"], x["quantity_outstanding"]) for x in body["lines"]
    ] == [
        (mug.sku, 6, 4),
        (jug.sku, 0, 4),
    ]
    assert stock_of(session, mug.sku) == (8, 0)
    [move] = _restocks(session, mug.sku)
    assert (move.delta_on_hand, move.on_hand_after, move.purchase_order_id, move.actor_id) == (
        6,
        8,
        po["id"],
        staff.id,
    )
    ledger = client.get(f"/api/v1/inventory/{mug.sku}/movements", headers=staff.headers).json()
    assert ledger[0]["reason"] == "restock"
    assert ledger[0]["purchase_order_id"] == po["id"]

    # The same receipt again (body id or header) changes nothing; other quantities are refused.
    replay = _receive(client, staff, po["id"], {mug.sku: 6}, "delivery-1")
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["lines"] == body["lines"]
    header = client.post(
        f"{P}/{po['id']}/receive",
        json={"lines": [{"sku": mug.sku, "quantity": 6}]},
        headers={**staff.headers, "Idempotency-Key": "delivery-1"},
    )
    assert header.headers["Idempotent-Replayed"] == "true"
    assert_problem(_receive(client, staff, po["id"], {mug.sku: 5}, "delivery-1"), 422)
    assert stock_of(session, mug.sku) == (8, 0)
    assert len(_restocks(session, mug.sku)) == 1

    # More than ordered is refused as a whole: nothing of the receipt is booked.
    over = assert_problem(_receive(client, staff, po["id"], {jug.sku: 1, mug.sku: 5}, "d-2"), 409)
    assert over["type"].endswith("over-receipt")
    assert (over["sku"], over["outstanding"]) == (mug.sku, 4)
    assert stock_of(session, jug.sku) == (0, 0)
    assert_problem(_receive(client, staff, po["id"], {"NOT-ON-PO": 1}, "d-3"), 422)
    bad = {"lines": [{"sku": mug.sku, "quantity": 1}, {"sku": mug.sku, "quantity": 1}]}
    assert_problem(client.post(f"{P}/{po['id']}/receive", json=bad, headers=staff.headers), 422)
    assert_problem(_receive(client, staff, po["id"], {mug.sku: 0}, "d-4"), 422)
    assert_problem(_receive(client, staff, "nope", {mug.sku: 1}, "d-5"), 404)

    # The rest arrives: received; nothing more can arrive and it cannot be cancelled.
    r = _receive(client, staff, po["id"], {mug.sku: 4, jug.sku: 4}, "delivery-2")
    assert r.json()["status"] == "received", r.text
    assert stock_of(session, mug.sku) == (12, 0)
    assert stock_of(session, jug.sku) == (4, 0)
    assert [m.on_hand_after for m in _restocks(session, mug.sku)] == [8, 12]
    assert (
        _receive(client, staff, po["id"], {mug.sku: 4, jug.sku: 4}, "delivery-2").headers[
            "Idempotent-Replayed"
        ]
        == "true"
    )
    late = assert_problem(_receive(client, staff, po["id"], {mug.sku: 1}, "delivery-3"), 409)
    assert late["type"].endswith("invalid-transition")
    assert_problem(client.post(f"{P}/{po['id']}/cancel", headers=staff.headers), 409)
    full = client.get(f"{P}/{po['id']}", headers=staff.headers).json()
    assert [r["receipt_id"] for r in full["receipts"]] == ["delivery-1", "delivery-2"]
    listed = client.get(f"{P}?status=received&sku={jug.sku}", headers=staff.headers).json()
    assert [p["id"] for p in listed["items"]] == [po["id"]]
    assert client.get(f"{P}?status=placed", headers=staff.headers).json()["total"] == 0


def test_create_and_cancel_rules(client: TestClient, session: Session, staff: Account) -> None:
    mug = make_variant(session, stock=1)
    sid = _supplier(client, staff, lead=3)
    line = [{"sku": mug.sku, "quantity": 5, "unit_cost": "1.20"}]
    when = "2031-01-02T09:00:00+00:00"
    body = {"supplier_id": sid, "lines": line, "expected_at": when, "note": "spring"}
    first = client.post(P, json=body, headers={**staff.headers, "Idempotency-Key": "po-1"})
    assert first.status_code == 201, first.text
    assert datetime.fromisoformat(first.json()["expected_at"]) == datetime.fromisoformat(when)
    again = client.post(P, json=body, headers={**staff.headers, "Idempotency-Key": "po-1"})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = {**body, "note": "autumn"}
    assert_problem(
        client.post(P, json=changed, headers={**staff.headers, "Idempotency-Key": "po-1"}), 422
    )
    assert client.get(P, headers=staff.headers).json()["total"] == 1
    for bad, status in (
        ({"supplier_id": 999999, "lines": line}, 422),
        ({"supplier_id": sid, "lines": [{**line[0], "sku": "NO-SUCH-SKU"}]}, 422),
        ({"supplier_id": sid, "lines": [line[0], line[0]]}, 422),
        ({"supplier_id": sid, "lines": []}, 422),
        ({"supplier_id": sid, "lines": [{**line[0], "unit_cost": "-1"}]}, 422),
        ({"supplier_id": sid, "lines": [{**line[0], "quantity": 0}]}, 422),
    ):
        assert_problem(client.post(P, json=bad, headers=staff.headers), status)

    # Placed → cancelled; a cancelled order takes no goods and stays cancelled.
    po = first.json()["id"]
    r = client.post(f"{P}/{po}/cancel", json={"reason": "found cheaper"}, headers=staff.headers)
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    assert "found cheaper" in r.json()["note"]
    assert_problem(client.post(f"{P}/{po}/cancel", headers=staff.headers), 409)
    assert_problem(_receive(client, staff, po, {mug.sku: 1}, "late"), 409)
    assert stock_of(session, mug.sku) == (1, 0)

    # Partly received → cancelled closes the rest; what arrived stays on the shelf.
    partly = _po(client, staff, sid, [(mug.sku, 5)])["id"]
    assert _receive(client, staff, partly, {mug.sku: 2}, None).status_code == 200
    r = client.post(f"{P}/{partly}/cancel", headers=staff.headers)
    assert r.json()["status"] == "cancelled"
    assert r.json()["lines"][0]["quantity_received"] == 2
    assert stock_of(session, mug.sku) == (3, 0)
    assert_problem(client.post(f"{P}/missing/cancel", headers=staff.headers), 404)

    # An inactive supplier takes no new orders.
    client.patch(f"{S}/{sid}", json={"is_active": False}, headers=staff.headers)
    inactive = assert_problem(
        client.post(P, json={"supplier_id": sid, "lines": line}, headers=staff.headers), 409
    )
    assert inactive["type"].endswith("supplier-inactive")


def test_concurrent_receipts_do_not_double_count(
    client: TestClient, session: Session, staff: Account
) -> None:
    mug = make_variant(session, stock=0, name="Mug")
    jug = make_variant(session, stock=0, name="Jug")
    sid = _supplier(client, staff)
    # 12 mugs: one receipt of 4 sent four times at once, and four receipts of 2.
    mugs = _po(client, staff, sid, [(mug.sku, 12)])["id"]
    # 10 jugs: five receipts of 3 at once, only three fit.
    jugs = _po(client, staff, sid, [(jug.sku, 10)])["id"]
    calls = [(mugs, mug.sku, 4, "same") for _ in range(4)]
    calls += [(mugs, mug.sku, 2, f"m-{i}") for i in range(4)]
    calls += [(jugs, jug.sku, 3, f"j-{i}") for i in range(5)]
    start = threading.Barrier(len(calls), timeout=30)

    def attempt(args: tuple[str, str, int, str]) -> Any:
        po, sku, qty, key = args
        start.wait()
        return _receive(client, staff, po, {sku: qty}, key)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        responses = list(pool.map(attempt, calls))

    mug_responses, jug_responses = responses[:8], responses[8:]
    assert [r.status_code for r in mug_responses] == [200] * 8, [r.text for r in mug_responses]
    fresh = [r for r in mug_responses[:4] if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    assert stock_of(session, mug.sku) == (12, 0)
    assert sum(m.delta_on_hand for m in _restocks(session, mug.sku)) == 12
    assert len(_restocks(session, mug.sku)) == 5
    done = client.get(f"{P}/{mugs}", headers=staff.headers).json()
    assert done["status"] == "received"
    assert len(done["receipts"]) == 5

    statuses = sorted(r.status_code for r in jug_responses)
    assert statuses == [200, 200, 200, 409, 409], [r.text for r in jug_responses]
    for r in jug_responses:
        if r.status_code == 409:
            assert assert_problem(r, 409)["type"].endswith("over-receipt")
    assert stock_of(session, jug.sku) == (9, 0)
    moves = _restocks(session, jug.sku)
    assert sorted(m.on_hand_after for m in moves) == [3, 6, 9]
    jug_po = client.get(f"{P}/{jugs}", headers=staff.headers).json()
    assert (jug_po["status"], jug_po["lines"][0]["quantity_received"]) == ("partially_received", 9)
