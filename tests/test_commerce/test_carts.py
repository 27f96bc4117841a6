"""Carts: guest tokens, user carts, lines and limits, current prices, merge on login."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cartwise.commerce.carts.models import Cart, CartItem
from cartwise.commerce.catalog.models import Product, ProductStatus, Variant
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    add_item,
    guest_cart,
    make_variant,
    stock_of,
    user_cart,
)


def test_guest_cart_token_shown_once_and_stored_hashed(
    client: TestClient, session: Session
) -> None:
    cart_id, headers = guest_cart(client)
    r = client.get(f"/api/v1/carts/{cart_id}", headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert body["token"] is None
    assert body["status"] == "active"
    assert body["items"] == []
    assert body["subtotal"] == "0.00"
    stored = session.get(Cart, cart_id)
    assert stored is not None
    token = headers["X-Cart-Token"]
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (stored.token_hash or "")


def test_guest_cart_needs_its_token(client: TestClient, customer: Account) -> None:
    cart_id, headers = guest_cart(client)
    _other_id, other_headers = guest_cart(client)
    assert_problem(client.get(f"/api/v1/carts/{cart_id}"), 404)
    assert_problem(client.get(f"/api/v1/carts/{cart_id}", headers={"X-Cart-Token": "nope"}), 404)
    assert_problem(client.get(f"/api/v1/carts/{cart_id}", headers=other_headers), 404)
    assert_problem(client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers), 404)
    assert client.get(f"/api/v1/carts/{cart_id}", headers=headers).status_code == 200


def test_user_cart_is_reused(client: TestClient, customer: Account) -> None:
    first = client.post("/api/v1/carts", headers=customer.headers)
    assert first.status_code == 201
    again = client.post("/api/v1/carts", headers=customer.headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["token"] is None


def test_add_same_sku_twice_increments_line(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, price="12.50", stock=20)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku, 2)
    r = client.post(
        f"/api/v1/carts/{cart_id}/items",
        json={"variant_id": variant.id, "quantity": 3},
        headers=customer.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 1
    line = body["items"][0]
    assert line["quantity"] == 5
    assert line["sku"] == variant.sku
    assert line["unit_price"] == "12.50"
    assert line["line_total"] == "62.50"
    assert line["available"] == 20
    assert body["subtotal"] == "62.50"
    assert body["item_count"] == 5


def test_cart_shows_current_prices(client: TestClient, session: Session, customer: Account) -> None:
    variant = make_variant(session, price="10.00")
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku, 3)
    variant.price = Decimal("7.35")
    session.add(variant)
    session.commit()
    body = client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers).json()
    assert body["items"][0]["unit_price"] == "7.35"
    assert body["subtotal"] == "22.05"


def test_patch_and_delete_lines(client: TestClient, session: Session, customer: Account) -> None:
    a = make_variant(session, price="1.10")
    b = make_variant(session, price="2.20")
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, a.sku)
    body = add_item(client, cart_id, customer.headers, b.sku)
    item_a, item_b = (i["id"] for i in body["items"])
    r = client.patch(
        f"/api/v1/carts/{cart_id}/items/{item_a}", json={"quantity": 4}, headers=customer.headers
    )
    assert r.status_code == 200
    assert r.json()["subtotal"] == "6.60"
    r = client.delete(f"/api/v1/carts/{cart_id}/items/{item_b}", headers=customer.headers)
    assert r.status_code == 200
    assert [i["sku"] for i in r.json()["items"]] == [a.sku]
    assert_problem(
        client.delete(f"/api/v1/carts/{cart_id}/items/{item_b}", headers=customer.headers), 404
    )


def test_items_of_another_cart_are_404(client: TestClient, session: Session, make_user) -> None:
    variant = make_variant(session)
    a, b = make_user(), make_user()
    cart_a = user_cart(client, a.headers)
    cart_b = user_cart(client, b.headers)
    item_a = add_item(client, cart_a, a.headers, variant.sku)["items"][0]["id"]
    # B names A's item under B's own cart.
    assert_problem(
        client.patch(
            f"/api/v1/carts/{cart_b}/items/{item_a}", json={"quantity": 2}, headers=b.headers
        ),
        404,
    )
    assert_problem(client.delete(f"/api/v1/carts/{cart_b}/items/{item_a}", headers=b.headers), 404)
    assert session.get(CartItem, item_a) is not None


def test_unknown_inactive_and_archived_skus(
    client: TestClient, session: Session, customer: Account
) -> None:
    inactive = make_variant(session, is_active=False)
    archived = make_variant(session, status=ProductStatus.archived)
    draft = make_variant(session, status=ProductStatus.draft)
    cart_id = user_cart(client, customer.headers)
    url = f"/api/v1/carts/{cart_id}/items"
    assert_problem(client.post(url, json={"sku": "NO-SUCH-SKU"}, headers=customer.headers), 404)
    assert_problem(client.post(url, json={"variant_id": 999_999}, headers=customer.headers), 404)
    for variant in (inactive, archived, draft):
        body = assert_problem(
            client.post(url, json={"sku": variant.sku}, headers=customer.headers), 422
        )
        assert variant.sku in body["detail"]
    assert_problem(client.post(url, json={"quantity": 1}, headers=customer.headers), 422)
    assert client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers).json()["items"] == []


def test_quantity_limits_and_stock(client: TestClient, session: Session, customer: Account) -> None:
    variant = make_variant(session, stock=500)
    scarce = make_variant(session, stock=3)
    cart_id = user_cart(client, customer.headers)
    url = f"/api/v1/carts/{cart_id}/items"
    add_item(client, cart_id, customer.headers, variant.sku, 60)
    body = assert_problem(
        client.post(url, json={"sku": variant.sku, "quantity": 50}, headers=customer.headers), 422
    )
    assert body["type"].endswith("quantity-limit")
    body = assert_problem(
        client.post(url, json={"sku": scarce.sku, "quantity": 4}, headers=customer.headers), 409
    )
    assert body["sku"] == scarce.sku
    item = client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers).json()["items"][0]
    assert item["quantity"] == 60
    assert_problem(
        client.patch(f"{url}/{item['id']}", json={"quantity": 101}, headers=customer.headers),
        422,
    )


@pytest.fixture
def small_client(make_settings: Callable[..., Any], db_url: str) -> Iterator[TestClient]:
    """A client on an app whose carts hold 2 lines of at most 5 units."""
    from cartwise.commerce import create_app

    app = create_app(make_settings(database_url=db_url, max_cart_lines=2, max_line_quantity=5))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_max_cart_lines(small_client: TestClient, session: Session) -> None:
    skus = [make_variant(session).sku for _ in range(3)]
    cart_id, headers = guest_cart(small_client)
    add_item(small_client, cart_id, headers, skus[0])
    add_item(small_client, cart_id, headers, skus[1])
    body = assert_problem(
        small_client.post(f"/api/v1/carts/{cart_id}/items", json={"sku": skus[2]}, headers=headers),
        422,
    )
    assert body["type"].endswith("cart-full")
    # Adding to an existing line is still fine.
    add_item(small_client, cart_id, headers, skus[0], 2)


def test_bad_cart_input_is_4xx_and_changes_nothing(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, stock=10)
    cart_id = user_cart(client, customer.headers)
    item_id = add_item(client, cart_id, customer.headers, variant.sku, 2)["items"][0]["id"]
    url = f"/api/v1/carts/{cart_id}/items"
    h = customer.headers
    assert_problem(
        client.post(url, content=b'{"sku": ', headers=h | {"Content-Type": "application/json"}),
        400,
    )
    for bad in (
        {"sku": variant.sku, "quantity": "lots"},
        {"sku": variant.sku, "quantity": -1},
        {"sku": variant.sku, "quantity": 0},
        {"sku": variant.sku, "quantity": 10**12},
        {"sku": "X" * 65},
        {"sku": ["not", "a", "string"]},
        {"variant_id": -5},
        {"variant_id": 2**70},
    ):
        assert_problem(client.post(url, json=bad, headers=h), 422)
    assert_problem(client.patch(f"{url}/{item_id}", json={"quantity": -3}, headers=h), 422)
    assert_problem(client.patch(f"{url}/{item_id}", json={}, headers=h), 422)
    assert_problem(client.patch(f"{url}/{2**40}", json={"quantity": 1}, headers=h), 422)
    assert_problem(client.patch(f"{url}/999999", json={"quantity": 1}, headers=h), 404)
    assert_problem(client.get("/api/v1/carts/" + "a" * 33, headers=h), 422)
    assert_problem(client.get("/api/v1/carts/deadbeef", headers=h), 404)
    assert_problem(client.get(f"/api/v1/carts/{cart_id}", headers={"X-Cart-Token": "t" * 200}), 422)
    items = session.exec(select(CartItem).where(CartItem.cart_id == cart_id)).all()
    assert [(i.id, i.quantity) for i in items] == [(item_id, 2)]
    assert stock_of(session, variant.sku) == (10, 0)


def test_converted_cart_cannot_change(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku)
    cart = session.get(Cart, cart_id)
    assert cart is not None
    cart.status = "converted"  # type: ignore[assignment]
    session.add(cart)
    session.commit()
    body = assert_problem(
        client.post(
            f"/api/v1/carts/{cart_id}/items", json={"sku": variant.sku}, headers=customer.headers
        ),
        409,
    )
    assert body["type"].endswith("cart-not-active")
    # A new cart is started for the user.
    assert user_cart(client, customer.headers) != cart_id


def _login(client: TestClient, account: Account, headers: dict[str, str]) -> Any:
    return client.post(
        "/api/v1/auth/token",
        data={"username": account.email, "password": account.password},
        headers=headers,
    )


def test_guest_cart_merges_into_user_cart_on_login(
    client: TestClient, session: Session, customer: Account
) -> None:
    shared = make_variant(session, stock=500)
    only_guest = make_variant(session, stock=500)
    user_cart_id = user_cart(client, customer.headers)
    add_item(client, user_cart_id, customer.headers, shared.sku, 70)
    guest_id, guest_headers = guest_cart(client)
    add_item(client, guest_id, guest_headers, shared.sku, 50)
    add_item(client, guest_id, guest_headers, only_guest.sku, 2)

    r = _login(client, customer, {"X-Cart-Id": guest_id} | guest_headers)
    assert r.status_code == 200, r.text

    body = client.get(f"/api/v1/carts/{user_cart_id}", headers=customer.headers).json()
    quantities = {i["sku"]: i["quantity"] for i in body["items"]}
    assert quantities == {shared.sku: 100, only_guest.sku: 2}  # 70 + 50 capped at 100
    session.expire_all()
    guest = session.get(Cart, guest_id)
    assert guest is not None
    assert guest.status == "merged"
    # The merged guest cart can no longer be changed.
    assert_problem(
        client.post(
            f"/api/v1/carts/{guest_id}/items", json={"sku": shared.sku}, headers=guest_headers
        ),
        409,
    )


def test_merge_creates_user_cart_and_ignores_wrong_token(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    guest_id, guest_headers = guest_cart(client)
    add_item(client, guest_id, guest_headers, variant.sku, 2)
    r = _login(client, customer, {"X-Cart-Id": guest_id, "X-Cart-Token": "wrong-token"})
    assert r.status_code == 200
    session.expire_all()
    assert session.get(Cart, guest_id).status == "active"  # type: ignore[union-attr]
    assert session.exec(select(Cart).where(Cart.user_id == customer.id)).first() is None

    r = _login(client, customer, {"X-Cart-Id": guest_id} | guest_headers)
    assert r.status_code == 200
    cart_id = user_cart(client, customer.headers)
    body = client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers).json()
    assert [(i["sku"], i["quantity"]) for i in body["items"]] == [(variant.sku, 2)]


def test_archived_after_adding_still_shows(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku)
    product = session.exec(select(Product).join(Variant).where(Variant.sku == variant.sku)).one()
    product.status = ProductStatus.archived
    session.add(product)
    session.commit()
    body = client.get(f"/api/v1/carts/{cart_id}", headers=customer.headers).json()
    assert [i["sku"] for i in body["items"]] == [variant.sku]
