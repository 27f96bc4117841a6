"""Inventory routes: set and read stock per SKU, the ledger, access rules and bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.conftest import Account, assert_problem

I = "/api/v1/inventory"  # noqa: E741


def new_product(
    client: TestClient, staff: Account, slug: str, stock: int = 5, status: str = "active"
) -> dict[str, Any]:
    """Create a one-variant product whose SKU is the upper-cased slug."""
    r = client.post(
        "/api/v1/products",
        json={
            "name": slug.title(),
            "slug": slug,
            "status": status,
            "variants": [{"sku": slug.upper(), "price": "3.00", "initial_stock": stock}],
        },
        headers=staff.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_staff_set_and_read_stock_with_ledger(client: TestClient, staff: Account) -> None:
    new_product(client, staff, "candle", stock=5)
    r = client.put(f"{I}/CANDLE", json={"on_hand": 12, "note": "delivery"}, headers=staff.headers)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("sku", "on_hand", "reserved", "available")} == {
        "sku": "CANDLE",
        "on_hand": 12,
        "reserved": 0,
        "available": 12,
    }
    r = client.get(f"{I}/CANDLE", headers=staff.headers)
    assert r.json()["on_hand"] == 12
    assert r.json()["available"] == 12

    client.put(f"{I}/CANDLE", json={"on_hand": 4}, headers=staff.headers)
    ledger = client.get(f"{I}/CANDLE/movements", headers=staff.headers)
    assert ledger.status_code == 200
    lines = ledger.json()
    assert [(m["reason"], m["delta_on_hand"], m["on_hand_after"]) for m in lines] == [
        ("set", -8, 4),
        ("set", 7, 12),
        ("set", 5, 5),  # the initial stock
    ]
    assert lines[1]["note"] == "delivery"
    assert lines[1]["actor_id"] == staff.id
    assert len(client.get(f"{I}/CANDLE/movements?limit=1", headers=staff.headers).json()) == 1


def test_public_sees_only_availability(
    client: TestClient, staff: Account, customer: Account
) -> None:
    new_product(client, staff, "soap", stock=3)
    for headers in ({}, customer.headers):
        r = client.get(f"{I}/SOAP", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"sku": "SOAP", "available": 3, "in_stock": True}
    # SKUs not on sale are not the public's business.
    draft = new_product(client, staff, "hidden", status="draft")
    assert_problem(client.get(f"{I}/HIDDEN"), 404)
    assert client.get(f"{I}/HIDDEN", headers=staff.headers).json()["on_hand"] == 5
    client.delete(f"/api/v1/products/{draft['id']}", headers=staff.headers)
    assert_problem(client.get(f"{I}/HIDDEN", headers=customer.headers), 404)


def test_stock_writes_and_ledger_are_staff_only(
    client: TestClient, staff: Account, customer: Account
) -> None:
    new_product(client, staff, "rope", stock=2)
    assert_problem(client.put(f"{I}/ROPE", json={"on_hand": 99}), 401)
    assert_problem(client.put(f"{I}/ROPE", json={"on_hand": 99}, headers=customer.headers), 403)
    assert_problem(client.get(f"{I}/ROPE/movements"), 401)
    assert_problem(client.get(f"{I}/ROPE/movements", headers=customer.headers), 403)
    assert client.get(f"{I}/ROPE", headers=staff.headers).json()["on_hand"] == 2


def test_unknown_sku_is_404(client: TestClient, staff: Account, session: Session) -> None:
    from cartwise.commerce.inventory.models import StockLevel

    assert_problem(client.put(f"{I}/NOPE", json={"on_hand": 1}, headers=staff.headers), 404)
    assert_problem(client.get(f"{I}/NOPE", headers=staff.headers), 404)
    assert_problem(client.get(f"{I}/NOPE"), 404)
    assert_problem(client.get(f"{I}/NOPE/movements", headers=staff.headers), 404)
    assert session.exec(select(StockLevel)).all() == []


BAD_BODIES: list[Any] = [
    {"on_hand": -1},
    {"on_hand": 10_000_001},
    {"on_hand": 2**63},
    {"on_hand": "lots"},
    {"on_hand": 1.5},
    {"on_hand": None},
    {},
    {"on_hand": 1, "note": "n" * 201},
    [1, 2],
]


def test_bad_stock_input_is_422_and_changes_nothing(client: TestClient, staff: Account) -> None:
    new_product(client, staff, "brush", stock=6)
    for body in BAD_BODIES:
        r = client.put(f"{I}/BRUSH", json=body, headers=staff.headers)
        assert r.status_code == 422, (body, r.text)
        assert_problem(r, 422)
    assert client.get(f"{I}/BRUSH", headers=staff.headers).json()["on_hand"] == 6
    assert len(client.get(f"{I}/BRUSH/movements", headers=staff.headers).json()) == 1


def test_malformed_sku_is_422(client: TestClient, staff: Account) -> None:
    for sku in ("bad%20sku", "x" * 65, "semi;colon", "%27%20OR%201=1"):
        assert_problem(client.get(f"{I}/{sku}", headers=staff.headers), 422)
        assert_problem(client.put(f"{I}/{sku}", json={"on_hand": 1}, headers=staff.headers), 422)


def test_on_hand_cannot_go_below_reserved(
    client: TestClient, staff: Account, session: Session
) -> None:
    from cartwise.commerce.inventory import service as inventory
    from cartwise.platform.types import utcnow

    new_product(client, staff, "jar", stock=5)
    inventory.reserve(
        session=session,
        sku="JAR",
        quantity=3,
        order_id="o-1",
        expires_at=utcnow() + timedelta(minutes=15),
    )
    session.commit()
    r = client.get(f"{I}/JAR", headers=staff.headers).json()
    assert (r["on_hand"], r["reserved"], r["available"]) == (5, 3, 2)
    assert client.get(f"{I}/JAR").json()["available"] == 2
    body = assert_problem(client.put(f"{I}/JAR", json={"on_hand": 2}, headers=staff.headers), 409)
    assert body["type"].endswith("below-reserved")
    assert client.put(f"{I}/JAR", json={"on_hand": 3}, headers=staff.headers).status_code == 200
    r = client.get(f"{I}/JAR", headers=staff.headers).json()
    assert (r["on_hand"], r["reserved"], r["available"]) == (3, 3, 0)
    assert client.get(f"{I}/JAR").json() == {"sku": "JAR", "available": 0, "in_stock": False}
    reasons = [m["reason"] for m in client.get(f"{I}/JAR/movements", headers=staff.headers).json()]
    assert reasons == ["set", "reserve", "set"]


def test_stock_changes_show_in_the_cached_listing(client: TestClient, staff: Account) -> None:
    new_product(client, staff, "pot", stock=0)
    url = "/api/v1/products?in_stock=true"
    assert client.get(url).json()["total"] == 0
    assert client.get(url).headers["x-cache"] == "hit"
    client.put(f"{I}/POT", json={"on_hand": 4}, headers=staff.headers)
    r = client.get(url)
    assert r.headers["x-cache"] == "miss"
    assert r.json()["total"] == 1
    assert r.json()["items"][0]["variants"][0]["available"] == 4
    # A refused write does not invalidate.
    assert_problem(client.put(f"{I}/POT", json={"on_hand": -4}, headers=staff.headers), 422)
    assert client.get(url).headers["x-cache"] == "hit"
