"""Vouchers: staff management, the rules at checkout, and a usage limit under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.vouchers.models import Voucher
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    checkout_body,
    guest_cart,
    make_variant,
    order_count,
    orders,
    stock_of,
)


def _voucher(client: TestClient, staff: Account, **fields: Any) -> dict[str, Any]:
    body = {"code": "SAVE10", "kind": "percent", "value": "10"} | fields
    r = client.post("/api/v1/vouchers", json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def test_staff_create_and_list(client: TestClient, staff: Account, session: Session) -> None:
    created = _voucher(client, staff, code="  summer-25 ", usage_limit=5, min_spend="20.00")
    assert created["code"] == "SUMMER-25"
    assert created["times_used"] == 0
    assert created["is_active"] is True
    listed = client.get("/api/v1/vouchers", headers=staff.headers)
    assert listed.status_code == 200
    assert [v["code"] for v in listed.json()] == ["SUMMER-25"]
    # Codes are case-insensitive: the same code in lower case is a duplicate.
    r = client.post(
        "/api/v1/vouchers",
        json={"code": "Summer-25", "kind": "fixed", "value": "5"},
        headers=staff.headers,
    )
    assert_problem(r, 409)
    assert len(session.exec(select(Voucher)).all()) == 1


def test_inconsistent_vouchers_are_422(client: TestClient, staff: Account) -> None:
    for bad in (
        {"code": "BIG", "kind": "percent", "value": "150"},
        {"code": "ZERO", "kind": "percent", "value": "0"},
        {"code": "NOTHING", "kind": "fixed", "value": "0"},
        {"code": "NEG", "kind": "fixed", "value": "-1"},
        {"code": "ODD", "kind": "bogus", "value": "1"},
        {"code": "BAD CODE!", "kind": "fixed", "value": "1"},
        {"code": "X" * 41, "kind": "fixed", "value": "1"},
        {"code": "LIM", "kind": "fixed", "value": "1", "usage_limit": 0},
        {
            "code": "BACKWARDS",
            "kind": "fixed",
            "value": "1",
            "starts_at": _iso(timedelta(days=2)),
            "expires_at": _iso(timedelta(days=1)),
        },
    ):
        assert_problem(client.post("/api/v1/vouchers", json=bad, headers=staff.headers), 422)
    assert client.get("/api/v1/vouchers", headers=staff.headers).json() == []


def test_vouchers_are_staff_only(client: TestClient, customer: Account) -> None:
    body = {"code": "FREE", "kind": "percent", "value": "100"}
    assert_problem(client.get("/api/v1/vouchers", headers=customer.headers), 403)
    assert_problem(client.post("/api/v1/vouchers", json=body, headers=customer.headers), 403)
    assert_problem(client.get("/api/v1/vouchers"), 401)
    assert_problem(client.post("/api/v1/vouchers", json=body), 401)


def _guest_with(client: TestClient, sku: str, quantity: int = 2) -> tuple[str, dict[str, str]]:
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, sku, quantity)
    return cart_id, headers


def test_percent_voucher_at_checkout(client: TestClient, session: Session, staff: Account) -> None:
    variant = make_variant(session, price="12.50")
    _voucher(client, staff, code="SAVE10", usage_limit=2)
    cart_id, headers = _guest_with(client, variant.sku, 2)
    r = client.post(
        "/api/v1/checkout", json=checkout_body(cart_id, voucher_code="save10"), headers=headers
    )
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    # 25.00 - 2.50 + 4.95 shipping = 27.45; tax 20% = 5.49; total 32.94
    assert (order["subtotal"], order["discount"], order["shipping"]) == ("25.00", "2.50", "4.95")
    assert (order["tax"], order["total"], order["voucher_code"]) == ("5.49", "32.94", "SAVE10")
    session.expire_all()
    assert session.exec(select(Voucher)).one().times_used == 1


def test_fixed_voucher_is_capped_at_subtotal(
    client: TestClient, session: Session, staff: Account
) -> None:
    variant = make_variant(session, price="3.00")
    _voucher(client, staff, code="TENOFF", kind="fixed", value="10.00")
    cart_id, headers = _guest_with(client, variant.sku, 1)
    r = client.post(
        "/api/v1/checkout", json=checkout_body(cart_id, voucher_code="TENOFF"), headers=headers
    )
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert (order["subtotal"], order["discount"], order["total"]) == ("3.00", "3.00", "5.94")


def test_unusable_vouchers_are_422_and_change_nothing(
    client: TestClient, session: Session, staff: Account
) -> None:
    variant = make_variant(session, price="12.50")
    _voucher(client, staff, code="OLD", expires_at=_iso(timedelta(days=-1)))
    _voucher(client, staff, code="SOON", starts_at=_iso(timedelta(days=1)))
    _voucher(client, staff, code="BIGSPEND", min_spend="100.00")
    _voucher(client, staff, code="ONCE", usage_limit=1)
    session.exec(select(Voucher).where(Voucher.code == "ONCE")).one().times_used = 1
    session.commit()
    cart_id, headers = _guest_with(client, variant.sku, 2)
    expected = {
        "OLD": "expired",
        "SOON": "not valid yet",
        "BIGSPEND": "minimum spend of 100.00",
        "ONCE": "used up",
        "NOPE": "not valid",
    }
    for code, words in expected.items():
        r = client.post(
            "/api/v1/checkout", json=checkout_body(cart_id, voucher_code=code), headers=headers
        )
        body = assert_problem(r, 422)
        assert words in body["detail"], body
        assert body["type"].endswith("voucher-invalid")
    assert order_count(session) == 0
    assert stock_of(session, variant.sku) == (10, 0)
    session.expire_all()
    used = {v.code: v.times_used for v in session.exec(select(Voucher))}
    assert used == {"OLD": 0, "SOON": 0, "BIGSPEND": 0, "ONCE": 1}
    # The cart is untouched and still checks out without the voucher.
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201


def test_usage_limit_holds_under_concurrency(
    client: TestClient, session: Session, staff: Account
) -> None:
    variant = make_variant(session, price="20.00", stock=100)
    _voucher(client, staff, code="FIRST3", usage_limit=3)
    carts = [_guest_with(client, variant.sku, 1) for _ in range(10)]

    def attempt(cart: tuple[str, dict[str, str]]) -> Any:
        cart_id, headers = cart
        return client.post(
            "/api/v1/checkout", json=checkout_body(cart_id, voucher_code="first3"), headers=headers
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(attempt, carts))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [422] * 7, [r.text for r in responses]
    for r in responses:
        if r.status_code == 422:
            assert_problem(r, 422)
    session.expire_all()
    assert session.exec(select(Voucher)).one().times_used == 3
    placed = orders(session)
    assert len(placed) == 3
    assert all(o.voucher_code == "FIRST3" and str(o.discount) == "2.00" for o in placed)
    assert stock_of(session, variant.sku) == (100, 3)
