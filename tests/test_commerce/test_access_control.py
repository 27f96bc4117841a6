"""Access control on carts, orders and staff routes: 404 for strangers, 403 for customers."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    checkout_body,
    guest_cart,
    make_variant,
    order_count,
    stock_of,
    user_cart,
)


def test_user_b_cannot_reach_user_a_cart_or_order(
    client: TestClient, session: Session, make_user
) -> None:
    variant = make_variant(session, stock=10)
    a, b = make_user(), make_user()
    cart_a = user_cart(client, a.headers)
    item = add_item(client, cart_a, a.headers, variant.sku, 2)["items"][0]["id"]
    base = f"/api/v1/carts/{cart_a}"
    assert_problem(client.get(base, headers=b.headers), 404)
    assert_problem(client.post(f"{base}/items", json={"sku": variant.sku}, headers=b.headers), 404)
    assert_problem(
        client.patch(f"{base}/items/{item}", json={"quantity": 9}, headers=b.headers), 404
    )
    assert_problem(client.delete(f"{base}/items/{item}", headers=b.headers), 404)
    assert_problem(
        client.post("/api/v1/checkout", json=checkout_body(cart_a), headers=b.headers), 404
    )
    # Nobody without a token reaches a user cart either, not even with a guessed token.
    assert_problem(client.get(base), 404)
    assert_problem(client.get(base, headers={"X-Cart-Token": "guess"}), 404)

    r = client.post("/api/v1/checkout", json=checkout_body(cart_a), headers=a.headers)
    assert r.status_code == 201
    order_id = r.json()["order"]["id"]
    assert_problem(client.get(f"/api/v1/orders/{order_id}", headers=b.headers), 404)
    assert_problem(client.post(f"/api/v1/orders/{order_id}/cancel", headers=b.headers), 404)
    assert client.get("/api/v1/orders", headers=b.headers).json()["total"] == 0
    # Nothing B tried changed A's cart, order or stock.
    cart = client.get(base, headers=a.headers).json()
    assert [(i["id"], i["quantity"]) for i in cart["items"]] == [(item, 2)]
    order = client.get(f"/api/v1/orders/{order_id}", headers=a.headers).json()
    assert order["status"] == "pending_payment"
    assert stock_of(session, variant.sku) == (10, 2)


def test_guest_without_the_right_token_gets_404(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    cart_id, headers = guest_cart(client)
    _other, other_headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 1)
    base = f"/api/v1/carts/{cart_id}"
    for wrong in ({}, {"X-Cart-Token": "x"}, other_headers, customer.headers):
        assert_problem(client.get(base, headers=wrong), 404)
        assert_problem(client.post(f"{base}/items", json={"sku": variant.sku}, headers=wrong), 404)
        assert_problem(
            client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=wrong), 404
        )

    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201
    order_id = r.json()["order"]["id"]
    for wrong in ({}, {"X-Cart-Token": "x"}, other_headers, customer.headers):
        assert_problem(client.get(f"/api/v1/orders/{order_id}", headers=wrong), 404)
        assert_problem(client.post(f"/api/v1/orders/{order_id}/cancel", headers=wrong), 404)
    assert client.get(f"/api/v1/orders/{order_id}", headers=headers).status_code == 200
    # The guest holding the token may cancel while the order awaits payment.
    r = client.post(f"/api/v1/orders/{order_id}/cancel", headers=headers)
    assert r.status_code == 200
    assert r.json()["transitions"][-1]["actor"] == "guest"
    assert stock_of(session, variant.sku) == (10, 0)


def test_customer_gets_403_on_staff_routes(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku)
    order_id = client.post(
        "/api/v1/checkout", json=checkout_body(cart_id), headers=customer.headers
    ).json()["order"]["id"]
    h = customer.headers
    assert_problem(client.get("/api/v1/vouchers", headers=h), 403)
    assert_problem(
        client.post(
            "/api/v1/vouchers", json={"code": "X10", "kind": "fixed", "value": "1"}, headers=h
        ),
        403,
    )
    assert_problem(
        client.post(
            f"/api/v1/orders/{order_id}/transitions", json={"to_status": "paid"}, headers=h
        ),
        403,
    )
    assert_problem(client.get("/api/v1/orders?scope=all", headers=h), 403)
    assert order_count(session) == 1
    assert client.get(f"/api/v1/orders/{order_id}", headers=h).json()["status"] == "pending_payment"


def test_tampered_token_is_401_not_guest(client: TestClient, customer: Account) -> None:
    cart_id = user_cart(client, customer.headers)
    bad = {"Authorization": f"Bearer {customer.token[:-3]}abc"}
    assert_problem(client.get(f"/api/v1/carts/{cart_id}", headers=bad), 401)
    assert_problem(client.post("/api/v1/carts", headers=bad), 401)
    assert_problem(client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=bad), 401)
