"""Checkout: one unit of work, totals in Decimal, prices re-read, all-or-nothing on failure."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from cartwise.commerce.carts.models import Cart
from cartwise.commerce.catalog.models import Product, ProductStatus
from cartwise.commerce.inventory.models import MovementReason, StockMovement, StockReservation
from cartwise.commerce.orders.checkout import compute_totals
from cartwise.commerce.orders.models import Order, OrderTransition
from cartwise.commerce.outbox.models import OutboxEvent
from cartwise.commerce.payments.models import Payment
from cartwise.platform.settings import Settings
from tests.conftest import Account, assert_problem
from tests.test_commerce.factories import (
    ADDRESS,
    add_item,
    checkout_body,
    guest_cart,
    make_variant,
    order_count,
    stock_of,
    user_cart,
)


def test_totals_rules() -> None:
    settings = Settings(shipping_flat=Decimal("4.95"), free_shipping_over=Decimal("50.00"))
    t = compute_totals(settings=settings, subtotal=Decimal("25.00"))
    assert (t.subtotal, t.discount, t.shipping, t.tax, t.total) == (
        Decimal("25.00"),
        Decimal("0.00"),
        Decimal("4.95"),
        Decimal("5.99"),  # 20% of 29.95 = 5.99
        Decimal("35.94"),
    )
    # Free shipping is judged after the discount.
    t = compute_totals(settings=settings, subtotal=Decimal("55.00"), discount=Decimal("10.00"))
    assert t.shipping == Decimal("4.95")
    assert t.tax == Decimal("9.99")  # 20% of 49.95 = 9.99
    assert t.total == Decimal("59.94")
    t = compute_totals(settings=settings, subtotal=Decimal("60.00"), discount=Decimal("10.00"))
    assert t.shipping == Decimal("0.00")
    assert t.total == Decimal("60.00")
    # A discount never exceeds the subtotal; no free-shipping threshold means always flat.
    flat = Settings(free_shipping_over=None, shipping_flat=Decimal("3.00"))
    t = compute_totals(settings=flat, subtotal=Decimal("5.00"), discount=Decimal("8.00"))
    assert t.discount == Decimal("5.00")
    assert t.total == Decimal("3.60")


def test_guest_checkout_places_order_in_one_unit(client: TestClient, session: Session) -> None:
    variant = make_variant(session, price="12.50", stock=10)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 2)

    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201, r.text
    result = r.json()
    assert result["payment_provider"] == "manual"
    assert result["client_secret"] is None
    order = result["order"]
    assert order["status"] == "pending_payment"
    assert order["email"] == "guest@example.com"
    assert (order["subtotal"], order["discount"], order["shipping"]) == ("25.00", "0.00", "4.95")
    assert (order["tax"], order["total"]) == ("5.99", "35.94")
    assert order["shipping_address"]["postcode"] == ADDRESS["postcode"]
    assert [(ln["sku"], ln["quantity"], ln["unit_price"]) for ln in order["lines"]] == [
        (variant.sku, 2, "12.50")
    ]
    assert [(t["from_status"], t["to_status"], t["actor"]) for t in order["transitions"]] == [
        (None, "pending_payment", "guest")
    ]

    session.expire_all()
    assert stock_of(session, variant.sku) == (10, 2)
    reservation = session.exec(select(StockReservation)).one()
    assert (reservation.order_id, reservation.quantity, reservation.status) == (
        order["id"],
        2,
        "active",
    )
    assert reservation.expires_at > reservation.created_at
    cart = session.get(Cart, cart_id)
    assert cart is not None
    assert cart.status == "converted"
    events = session.exec(select(OutboxEvent)).all()
    assert [(e.event_type, e.aggregate_id) for e in events] == [("order.created", order["id"])]
    assert events[0].payload["total"] == "35.94"
    assert events[0].payload["lines"][0]["sku"] == variant.sku
    payment = session.exec(select(Payment)).one()
    assert (payment.order_id, payment.amount, payment.status) == (
        order["id"],
        Decimal("35.94"),
        "pending",
    )
    # The guest sees the order with the cart's token.
    r = client.get(f"/api/v1/orders/{order['id']}", headers=headers)
    assert r.status_code == 200
    assert r.json()["total"] == "35.94"


def test_free_shipping_over_threshold(client: TestClient, session: Session) -> None:
    variant = make_variant(session, price="12.50", stock=10)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 5)
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert (order["subtotal"], order["shipping"], order["tax"], order["total"]) == (
        "62.50",
        "0.00",
        "12.50",
        "75.00",
    )


def test_signed_in_checkout_uses_account_email_and_saved_address(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session, price="3.00")
    r = client.post("/api/v1/users/me/addresses", json=ADDRESS, headers=customer.headers)
    assert r.status_code == 201
    cart_id = user_cart(client, customer.headers)
    add_item(client, cart_id, customer.headers, variant.sku, 1)
    r = client.post("/api/v1/checkout", json={"cart_id": cart_id}, headers=customer.headers)
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert order["email"] == customer.email
    assert order["shipping_address"]["city"] == "York"
    assert order["transitions"][0]["actor"] == "customer"
    stored = session.get(Order, order["id"])
    assert stored is not None
    assert stored.user_id == customer.id
    assert stored.country == "GB"
    mine = client.get("/api/v1/orders", headers=customer.headers).json()
    assert [o["id"] for o in mine["items"]] == [order["id"]]


def test_checkout_rereads_prices(client: TestClient, session: Session) -> None:
    variant = make_variant(session, price="10.00")
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 2)
    variant.price = Decimal("11.11")
    session.add(variant)
    session.commit()
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["order"]["lines"][0]["unit_price"] == "11.11"
    assert r.json()["order"]["subtotal"] == "22.22"


def _assert_nothing_happened(session: Session, cart_id: str, skus: dict[str, int]) -> None:
    assert order_count(session) == 0
    for sku, on_hand in skus.items():
        assert stock_of(session, sku) == (on_hand, 0)
    assert session.exec(select(StockReservation)).all() == []
    reserve_moves = session.exec(
        select(StockMovement).where(StockMovement.reason == MovementReason.reserve)
    ).all()
    assert reserve_moves == []
    assert session.exec(select(OutboxEvent)).all() == []
    assert session.exec(select(OrderTransition)).all() == []
    cart = session.get(Cart, cart_id)
    assert cart is not None
    assert cart.status == "active"


def test_out_of_stock_rolls_everything_back(client: TestClient, session: Session) -> None:
    plenty = make_variant(session, stock=10, sku="AAA-PLENTY")
    scarce = make_variant(session, stock=5, sku="ZZZ-SCARCE")
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, plenty.sku, 2)
    add_item(client, cart_id, headers, scarce.sku, 4)
    # Someone else buys most of it in the meantime (staff lower the stock here).
    from cartwise.commerce.inventory import service as inventory

    inventory.set_stock(session=session, sku=scarce.sku, on_hand=3)
    r = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers)
    body = assert_problem(r, 409)
    assert body["sku"] == scarce.sku
    assert scarce.sku in body["detail"]
    # AAA-PLENTY was reserved first, then rolled back with the rest.
    _assert_nothing_happened(session, cart_id, {plenty.sku: 10, scarce.sku: 3})


def test_empty_cart_and_missing_details_are_422(client: TestClient, session: Session) -> None:
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    body = assert_problem(
        client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers), 422
    )
    assert body["type"].endswith("empty-cart")
    add_item(client, cart_id, headers, variant.sku)
    for bad in (
        {"cart_id": cart_id, "shipping_address": ADDRESS},
        {"cart_id": cart_id, "email": "guest@example.com"},
        {"cart_id": cart_id, "email": "not-an-email", "shipping_address": ADDRESS},
        checkout_body(cart_id, address_id=1),
    ):
        if "address_id" in bad:
            bad.pop("shipping_address")
        assert_problem(client.post("/api/v1/checkout", json=bad, headers=headers), 422)
    _assert_nothing_happened(session, cart_id, {variant.sku: 10})


def test_product_archived_after_adding_is_422(client: TestClient, session: Session) -> None:
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku)
    product = session.get(Product, variant.product_id)
    assert product is not None
    product.status = ProductStatus.archived
    session.add(product)
    session.commit()
    body = assert_problem(
        client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers), 422
    )
    assert body["sku"] == variant.sku
    _assert_nothing_happened(session, cart_id, {variant.sku: 10})


def test_cart_checks_out_only_once(client: TestClient, session: Session) -> None:
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku)
    assert (
        client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers).status_code
        == 201
    )
    body = assert_problem(
        client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=headers), 409
    )
    assert body["type"].endswith("cart-not-active")
    assert order_count(session) == 1
    assert stock_of(session, variant.sku) == (10, 1)


def test_bad_checkout_input_is_4xx_and_changes_nothing(
    client: TestClient, session: Session, customer: Account
) -> None:
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku, 2)
    url = "/api/v1/checkout"
    assert_problem(
        client.post(
            url, content=b"{not json", headers=headers | {"Content-Type": "application/json"}
        ),
        400,
    )
    for bad in (
        {},
        {"cart_id": 12},
        {"cart_id": "x" * 33},
        checkout_body(cart_id, email="e" * 250 + "@example.com"),
        checkout_body(cart_id, voucher_code="V" * 41),
        checkout_body(cart_id, voucher_code="ab"),
        checkout_body(cart_id, shipping_address={**ADDRESS, "country": "Britain"}),
        checkout_body(cart_id, shipping_address={**ADDRESS, "line1": "x" * 201}),
        checkout_body(cart_id, address_id=2**40),
        checkout_body(cart_id, address_id="one"),
    ):
        assert_problem(client.post(url, json=bad, headers=headers), 422)
    # Unknown carts, and carts of others, are 404.
    assert_problem(client.post(url, json=checkout_body("f" * 32), headers=headers), 404)
    assert_problem(client.post(url, json=checkout_body(cart_id)), 404)
    assert_problem(client.post(url, json=checkout_body(cart_id), headers=customer.headers), 404)
    # A signed-in user may not ship to another user's saved address.
    other_cart = user_cart(client, customer.headers)
    add_item(client, other_cart, customer.headers, variant.sku)
    assert_problem(
        client.post(url, json={"cart_id": other_cart, "address_id": 999}, headers=customer.headers),
        404,
    )
    assert order_count(session) == 0
    assert stock_of(session, variant.sku) == (10, 0)
    assert session.exec(select(Order).where(col(Order.cart_id) == cart_id)).first() is None


class _FakeIntentProvider:
    """Stands in for Stripe (the API itself cannot be reached here): returns a client secret."""

    name = "fake"

    def __init__(self) -> None:
        self.keys: list[str] = []

    def create_intent(self, *, order_id: str, idempotency_key: str, **_: object) -> object:
        from cartwise.commerce.payments.port import PaymentIntentResult

        self.keys.append(idempotency_key)
        return PaymentIntentResult(
            provider_ref=f"pi_{order_id}", client_secret=f"pi_{order_id}_secret", status="pending"
        )


def test_client_secret_is_returned_and_resumed_on_retry(
    client: TestClient, session: Session, monkeypatch
) -> None:
    from cartwise.commerce.payments import service as payments

    provider = _FakeIntentProvider()
    monkeypatch.setattr(payments, "get_provider", lambda _settings: provider)
    variant = make_variant(session)
    cart_id, headers = guest_cart(client)
    add_item(client, cart_id, headers, variant.sku)
    keyed = headers | {"Idempotency-Key": "pay-1"}
    first = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)
    assert first.status_code == 201, first.text
    order_id = first.json()["order"]["id"]
    assert first.json()["client_secret"] == f"pi_{order_id}_secret"
    assert first.json()["payment_intent_id"] == f"pi_{order_id}"
    again = client.post("/api/v1/checkout", json=checkout_body(cart_id), headers=keyed)
    assert again.status_code == 200
    assert again.json()["client_secret"] == first.json()["client_secret"]
    # Both calls used the same provider idempotency key, so the provider made one intent.
    assert len(set(provider.keys)) == 1
    assert len(session.exec(select(Payment).where(Payment.order_id == order_id)).all()) == 1
