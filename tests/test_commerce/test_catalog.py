"""Catalog: categories, products and variants, the cached public listing, and ETags."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, func, select

from tests.conftest import Account, assert_problem

P = "/api/v1/products"
C = "/api/v1/categories"


def new_category(
    client: TestClient, staff: Account, slug: str, parent_id: int | None = None
) -> dict[str, Any]:
    """Create a category through the API."""
    r = client.post(
        C,
        json={"name": slug.title(), "slug": slug, "parent_id": parent_id},
        headers=staff.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()


def new_product(
    client: TestClient,
    staff: Account,
    slug: str,
    *,
    name: str | None = None,
    price: str = "10.00",
    stock: int = 5,
    category_id: int | None = None,
    variants: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Create a product through the API (one variant unless given)."""
    body: dict[str, Any] = {
        "name": name or slug.replace("-", " ").title(),
        "slug": slug,
        "category_id": category_id,
        "variants": variants or [{"sku": slug.upper(), "price": price, "initial_stock": stock}],
    }
    r = client.post(P, json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _count(session: Session, model: Any) -> int:
    session.expire_all()
    return session.exec(select(func.count()).select_from(model)).one()


def _slugs(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["slug"] for p in response.json()["items"]]


# ---------------------------------------------------------------------------- categories


def test_category_tree_paths_and_access(
    client: TestClient, staff: Account, customer: Account
) -> None:
    home = new_category(client, staff, "home")
    kitchen = new_category(client, staff, "kitchen", home["id"])
    mugs = new_category(client, staff, "mugs", kitchen["id"])
    new_category(client, staff, "garden")
    assert mugs["path"] == ["home", "kitchen", "mugs"]

    r = client.get(C)
    assert r.status_code == 200
    assert [c["path"] for c in r.json()] == [
        ["garden"],
        ["home"],
        ["home", "kitchen"],
        ["home", "kitchen", "mugs"],
    ]
    body = {"name": "X", "slug": "x"}
    assert_problem(client.post(C, json=body), 401)
    assert_problem(client.post(C, json=body, headers=customer.headers), 403)
    assert_problem(
        client.post(C, json={"name": "Y", "slug": "y", "parent_id": 999}, headers=staff.headers),
        422,
    )
    assert_problem(client.post(C, json={"name": "Dup", "slug": "home"}, headers=staff.headers), 409)
    assert_problem(
        client.post(C, json={"name": "Bad", "slug": "Not A Slug"}, headers=staff.headers), 422
    )
    assert_problem(
        client.post(C, json={"name": "x" * 121, "slug": "long"}, headers=staff.headers), 422
    )
    assert len(client.get(C).json()) == 4


def test_category_moves_refuse_cycles(client: TestClient, staff: Account) -> None:
    a = new_category(client, staff, "a")
    b = new_category(client, staff, "b", a["id"])
    c = new_category(client, staff, "c", b["id"])
    for parent in (c["id"], b["id"], a["id"]):
        body = assert_problem(
            client.patch(f"{C}/{a['id']}", json={"parent_id": parent}, headers=staff.headers), 422
        )
        assert body["type"].endswith("category-cycle")
    assert_problem(
        client.patch(f"{C}/{a['id']}", json={"parent_id": 12345}, headers=staff.headers), 422
    )
    assert_problem(client.patch(f"{C}/999", json={"name": "Z"}, headers=staff.headers), 404)
    assert_problem(client.patch(f"{C}/{a['id']}", json={"name": None}, headers=staff.headers), 422)
    # A legal move: c becomes a root.
    r = client.patch(f"{C}/{c['id']}", json={"parent_id": None}, headers=staff.headers)
    assert r.status_code == 200
    assert r.json()["path"] == ["c"]
    paths = {c["slug"]: c["path"] for c in client.get(C).json()}
    assert paths == {"a": ["a"], "b": ["a", "b"], "c": ["c"]}


# ------------------------------------------------------------------------------ products


def test_create_product_with_variants_and_stock(
    client: TestClient, staff: Account, session: Session
) -> None:
    cat = new_category(client, staff, "mugs")
    product = new_product(
        client,
        staff,
        "tea-mug",
        category_id=cat["id"],
        variants=[
            {
                "sku": "MUG-RED",
                "price": "9.99",
                "attributes": {"colour": "red"},
                "initial_stock": 3,
            },
            {"sku": "MUG-BLUE", "price": 7.5, "attributes": {"colour": "blue"}},
        ],
    )
    assert product["price_min"] == "7.50"
    assert product["currency"] == "GBP"
    assert product["in_stock"] is True
    by_sku = {v["sku"]: v for v in product["variants"]}
    assert by_sku["MUG-RED"]["available"] == 3
    assert by_sku["MUG-RED"]["in_stock"] is True
    assert by_sku["MUG-BLUE"]["available"] == 0
    assert by_sku["MUG-BLUE"]["in_stock"] is False
    assert by_sku["MUG-RED"]["price"] == "9.99"

    from cartwise.commerce.inventory.models import StockLevel, StockMovement

    assert session.get(StockLevel, "MUG-RED").on_hand == 3  # type: ignore[union-attr]
    assert session.get(StockLevel, "MUG-BLUE").on_hand == 0  # type: ignore[union-attr]
    ledger = session.exec(select(StockMovement).where(StockMovement.sku == "MUG-RED")).all()
    assert [m.on_hand_after for m in ledger] == [3]

    public = client.get(f"{P}/{product['id']}")
    assert public.status_code == 200
    assert public.json()["name"] == "Tea Mug"


def test_product_writes_are_staff_only(
    client: TestClient, staff: Account, customer: Account
) -> None:
    product = new_product(client, staff, "lamp")
    pid, vid = product["id"], product["variants"][0]["id"]
    body = {"name": "N", "slug": "n", "variants": [{"sku": "N-1", "price": "1.00"}]}
    variant = {"sku": "LAMP-2", "price": "2.00"}
    calls = [
        ("POST", P, body),
        ("PATCH", f"{P}/{pid}", {"name": "Hacked"}),
        ("DELETE", f"{P}/{pid}", None),
        ("POST", f"{P}/{pid}/variants", variant),
        ("PATCH", f"/api/v1/variants/{vid}", {"price": "0.01"}),
    ]
    for method, url, payload in calls:
        assert_problem(client.request(method, url, json=payload), 401)
        assert_problem(client.request(method, url, json=payload, headers=customer.headers), 403)
    after = client.get(f"{P}/{pid}").json()
    assert after["name"] == "Lamp"
    assert [v["price"] for v in after["variants"]] == ["10.00"]


def test_duplicate_slug_and_sku_are_409_and_change_nothing(
    client: TestClient, staff: Account, session: Session
) -> None:
    from cartwise.commerce.catalog.models import Product, Variant

    new_product(client, staff, "chair")
    dup_slug = {"name": "Chair 2", "slug": "chair", "variants": [{"sku": "C2", "price": "1"}]}
    assert_problem(client.post(P, json=dup_slug, headers=staff.headers), 409)
    dup_sku = {"name": "Chair 3", "slug": "chair-3", "variants": [{"sku": "CHAIR", "price": "1"}]}
    assert_problem(client.post(P, json=dup_sku, headers=staff.headers), 409)
    twice = {
        "name": "Chair 4",
        "slug": "chair-4",
        "variants": [{"sku": "C4", "price": "1"}, {"sku": "C4", "price": "2"}],
    }
    assert_problem(client.post(P, json=twice, headers=staff.headers), 409)
    assert _count(session, Product) == 1
    assert _count(session, Variant) == 1


BAD_PRODUCT_PATCHES: list[dict[str, Any]] = [
    {"variants": [{"sku": "X", "price": "1.234"}]},  # three decimal places
    {"variants": [{"sku": "X", "price": "-1.00"}]},
    {"variants": [{"sku": "X", "price": "NaN"}]},
    {"variants": [{"sku": "X", "price": "Infinity"}]},
    {"variants": [{"sku": "X", "price": "1e20"}]},
    {"variants": [{"sku": "X", "price": "abc"}]},
    {"variants": [{"sku": "X", "price": "1.00", "currency": "gbp"}]},
    {"variants": [{"sku": "X", "price": "1.00", "currency": "EURO"}]},
    {"variants": [{"sku": "X", "price": "1.00", "currency": "USD"}]},  # shop sells in GBP
    {"variants": [{"sku": "X", "price": "1.00", "initial_stock": -1}]},
    {"variants": [{"sku": "X", "price": "1.00", "initial_stock": 10**12}]},
    {"variants": [{"sku": "X" * 65, "price": "1.00"}]},
    {"variants": [{"sku": "X; DROP TABLE product", "price": "1.00"}]},
    {"variants": [{"sku": "X", "price": "1.00", "attributes": {"k" * 41: "v"}}]},
    {"variants": [{"sku": "X", "price": "1.00", "attributes": {"k": "v" * 201}}]},
    {"variants": [{"sku": "X", "price": "1.00", "attributes": {"k": 5}}]},
    {"variants": []},
    {"name": "n" * 201},
    {"name": ""},
    {"name": 123},
    {"slug": "Has Spaces"},
    {"description": "d" * 10_001},
    {"category_id": 999},
    {"category_id": 2**40},
    {"category_id": "one"},
    {"status": "sold-out"},
]


def test_bad_product_input_is_4xx_and_changes_nothing(
    client: TestClient, staff: Account, session: Session
) -> None:
    from cartwise.commerce.catalog.models import Product, Variant

    for patch in BAD_PRODUCT_PATCHES:
        body: dict[str, Any] = {
            "name": "Thing",
            "slug": "thing",
            "variants": [{"sku": "T-1", "price": "1.00"}],
        }
        body.update(patch)
        r = client.post(P, json=body, headers=staff.headers)
        assert r.status_code == 422, (patch, r.text)
        assert_problem(r, 422)
    assert _count(session, Product) == 0
    assert _count(session, Variant) == 0


def test_malformed_json_is_400(client: TestClient, staff: Account) -> None:
    r = client.post(
        P,
        content=b'{"name": "x",',
        headers={**staff.headers, "Content-Type": "application/json"},
    )
    assert_problem(r, 400)


def test_update_and_archive(client: TestClient, staff: Account, session: Session) -> None:
    cat = new_category(client, staff, "desks")
    product = new_product(client, staff, "desk")
    pid = product["id"]

    r = client.patch(
        f"{P}/{pid}",
        json={"name": "Oak Desk", "category_id": cat["id"]},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Oak Desk"
    assert r.json()["category_id"] == cat["id"]
    for bad in ({"name": None}, {"status": None}, {"category_id": 404}, {"name": "x" * 201}):
        assert_problem(client.patch(f"{P}/{pid}", json=bad, headers=staff.headers), 422)
    assert_problem(client.patch(f"{P}/999", json={"name": "x"}, headers=staff.headers), 404)
    assert_problem(client.patch(f"{P}/{2**40}", json={"name": "x"}, headers=staff.headers), 422)
    assert_problem(client.get(f"{P}/not-a-number"), 422)
    assert_problem(client.get(f"{P}/0"), 422)
    assert client.get(f"{P}/{pid}").json()["name"] == "Oak Desk"

    assert client.delete(f"{P}/{pid}", headers=staff.headers).status_code == 204
    assert client.delete(f"{P}/{pid}", headers=staff.headers).status_code == 204  # idempotent
    assert_problem(client.get(f"{P}/{pid}"), 404)
    seen = client.get(f"{P}/{pid}", headers=staff.headers)
    assert seen.status_code == 200
    assert seen.json()["status"] == "archived"
    assert _slugs(client.get(P)) == []
    # Archived, not deleted: the rows stay for the orders that refer to them.
    from cartwise.commerce.catalog.models import Product, Variant

    assert _count(session, Product) == 1
    assert _count(session, Variant) == 1
    assert_problem(client.delete(f"{P}/999", headers=staff.headers), 404)


def test_drafts_are_hidden_and_status_filter_is_staff_only(
    client: TestClient, staff: Account, customer: Account
) -> None:
    draft = client.post(
        P,
        json={
            "name": "Secret",
            "slug": "secret",
            "status": "draft",
            "variants": [{"sku": "S-1", "price": "5.00"}],
        },
        headers=staff.headers,
    ).json()
    assert_problem(client.get(f"{P}/{draft['id']}"), 404)
    assert_problem(client.get(f"{P}/{draft['id']}", headers=customer.headers), 404)
    assert _slugs(client.get(P)) == []
    assert _slugs(client.get(f"{P}?status=draft", headers=staff.headers)) == ["secret"]
    assert_problem(client.get(f"{P}?status=draft"), 403)
    assert_problem(client.get(f"{P}?status=archived", headers=customer.headers), 403)


def test_variants_add_and_reprice(client: TestClient, staff: Account) -> None:
    product = new_product(client, staff, "shirt", price="20.00")
    pid = product["id"]
    r = client.post(
        f"{P}/{pid}/variants",
        json={"sku": "SHIRT-L", "price": "15.5", "attributes": {"size": "L"}, "initial_stock": 2},
        headers=staff.headers,
    )
    assert r.status_code == 201, r.text
    large = r.json()
    assert large["price"] == "15.50"
    assert large["available"] == 2
    assert large["in_stock"] is True
    assert client.get(f"{P}/{pid}").json()["price_min"] == "15.50"

    dup = {"sku": "SHIRT-L", "price": "1.00"}
    assert_problem(client.post(f"{P}/{pid}/variants", json=dup, headers=staff.headers), 409)
    assert_problem(client.post(f"{P}/999/variants", json=dup, headers=staff.headers), 404)
    usd = {"sku": "SHIRT-XL", "price": "1.00", "currency": "USD"}
    assert_problem(client.post(f"{P}/{pid}/variants", json=usd, headers=staff.headers), 422)

    vurl = f"/api/v1/variants/{large['id']}"
    r = client.patch(vurl, json={"price": "12.00"}, headers=staff.headers)
    assert r.status_code == 200
    assert r.json()["price"] == "12.00"
    for bad in ({"price": "1.001"}, {"price": -1}, {"price": None}, {"currency": "usd"}):
        assert_problem(client.patch(vurl, json=bad, headers=staff.headers), 422)
    assert_problem(client.patch("/api/v1/variants/999", json={}, headers=staff.headers), 404)
    assert client.get(f"{P}/{pid}").json()["price_min"] == "12.00"

    # A variant taken off sale disappears for the public but not for staff.
    assert client.patch(vurl, json={"is_active": False}, headers=staff.headers).status_code == 200
    public = client.get(f"{P}/{pid}").json()
    assert [v["sku"] for v in public["variants"]] == ["SHIRT"]
    assert public["price_min"] == "20.00"
    staff_view = client.get(f"{P}/{pid}", headers=staff.headers).json()
    assert {v["sku"] for v in staff_view["variants"]} == {"SHIRT", "SHIRT-L"}


# ------------------------------------------------------------------------------- listing


@pytest.fixture
def shop(client: TestClient, staff: Account) -> dict[str, Any]:
    """A small catalog: a category tree and five products."""
    home = new_category(client, staff, "home")
    kitchen = new_category(client, staff, "kitchen", home["id"])
    garden = new_category(client, staff, "garden")
    new_product(client, staff, "apron", price="12.00", stock=0, category_id=kitchen["id"])
    new_product(client, staff, "bowl", price="4.50", stock=3, category_id=kitchen["id"])
    new_product(client, staff, "cushion", price="25.00", stock=1, category_id=home["id"])
    new_product(client, staff, "deckchair", price="80.00", stock=2, category_id=garden["id"])
    new_product(client, staff, "egg-cup", price="2.00", stock=9)
    return {"home": home["id"], "kitchen": kitchen["id"], "garden": garden["id"]}


def test_listing_filters(client: TestClient, shop: dict[str, Any]) -> None:
    everything = client.get(P).json()
    assert everything["total"] == 5
    assert everything["page"] == 1
    assert _slugs(client.get(f"{P}?category={shop['home']}&sort=name")) == [
        "apron",
        "bowl",
        "cushion",
    ]
    assert _slugs(client.get(f"{P}?category={shop['kitchen']}&sort=name")) == ["apron", "bowl"]
    assert _slugs(client.get(f"{P}?category=9999")) == []
    assert _slugs(client.get(f"{P}?min_price=4.5&max_price=25&sort=price_asc")) == [
        "bowl",
        "apron",
        "cushion",
    ]
    assert _slugs(client.get(f"{P}?min_price=50")) == ["deckchair"]
    assert _slugs(client.get(f"{P}?in_stock=true&sort=name")) == [
        "bowl",
        "cushion",
        "deckchair",
        "egg-cup",
    ]
    assert _slugs(client.get(f"{P}?in_stock=false")) == ["apron"]
    assert _slugs(client.get(f"{P}?q=CUP")) == ["egg-cup"]
    assert _slugs(client.get(f"{P}?q=chair&category={shop['garden']}&in_stock=true")) == [
        "deckchair"
    ]
    listed = client.get(f"{P}?q=bowl").json()["items"][0]
    assert listed["price_min"] == "4.50"
    assert listed["in_stock"] is True
    assert listed["variants"][0]["available"] == 3


def test_listing_sorting_and_pagination(client: TestClient, shop: dict[str, Any]) -> None:
    assert _slugs(client.get(f"{P}?sort=price_asc")) == [
        "egg-cup",
        "bowl",
        "apron",
        "cushion",
        "deckchair",
    ]
    assert _slugs(client.get(f"{P}?sort=price_desc"))[0] == "deckchair"
    assert _slugs(client.get(f"{P}?sort=newest")) == [
        "egg-cup",
        "deckchair",
        "cushion",
        "bowl",
        "apron",
    ]
    pages = [_slugs(client.get(f"{P}?sort=name&page_size=2&page={n}")) for n in (1, 2, 3, 4)]
    assert pages == [["apron", "bowl"], ["cushion", "deckchair"], ["egg-cup"], []]
    page2 = client.get(f"{P}?sort=name&page_size=2&page=2").json()
    assert (page2["total"], page2["page"], page2["page_size"]) == (5, 2, 2)


BAD_QUERIES = [
    "page=0",
    "page=-1",
    "page=100000",
    "page=abc",
    "page_size=0",
    "page_size=101",
    "page_size=99999999999999999999",
    "min_price=-1",
    "min_price=abc",
    "min_price=NaN",
    "max_price=1e30",
    "min_price=10&max_price=5",
    "category=0",
    "category=99999999999",
    "in_stock=maybe",
    "sort=random",
    "q=" + "x" * 101,
    "q=%00",
]


def test_listing_rejects_bad_queries(client: TestClient) -> None:
    for query in BAD_QUERIES:
        r = client.get(f"{P}?{query}")
        assert r.status_code == 422, (query, r.text)
        assert_problem(r, 422)


INJECTION_TERMS = ["' OR 1=1 --", "'; DROP TABLE product; --", "%", "_", "\\", '" OR ""="', "%' --"]


def test_search_is_safe_with_injection_shaped_terms(
    client: TestClient, staff: Account, session: Session
) -> None:
    from cartwise.commerce.catalog.models import Product

    new_product(client, staff, "plain-mug")
    for term in INJECTION_TERMS:
        r = client.get(P, params={"q": term})
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [], term  # wildcards are literal, quotes are data
    assert _count(session, Product) == 1
    for n, term in enumerate(INJECTION_TERMS):
        literal = new_product(client, staff, f"odd-{n}", name=f"Odd {term} Name")
        hits = client.get(P, params={"q": term}).json()["items"]
        assert [p["id"] for p in hits] == [literal["id"]], term
        client.delete(f"{P}/{literal['id']}", headers=staff.headers)


def test_listing_query_count_does_not_grow_with_the_page(
    client: TestClient, staff: Account, app: Any
) -> None:
    from sqlalchemy import event

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def queries_for(url: str) -> int:
        statements.clear()
        event.listen(app.state.engine, "before_cursor_execute", count)
        try:
            r = client.get(url)
        finally:
            event.remove(app.state.engine, "before_cursor_execute", count)
        assert r.status_code == 200
        assert r.headers["x-cache"] == "miss"
        assert r.json()["total"] == len(r.json()["items"]) > 0
        return len(statements)

    cat = new_category(client, staff, "lots")
    new_product(client, staff, "p-0", category_id=cat["id"])
    one = queries_for(f"{P}?page_size=50")
    for n in range(1, 8):
        new_product(
            client,
            staff,
            f"p-{n}",
            category_id=cat["id"],
            variants=[
                {"sku": f"P{n}-A", "price": "1.00", "initial_stock": 1},
                {"sku": f"P{n}-B", "price": "2.00"},
            ],
        )
    query = f"{P}?page_size=50&category={cat['id']}&in_stock=true&min_price=0.5"
    many = queries_for(query)
    assert one <= 6
    assert many <= one + 1  # the category filter reads the tree once
    assert client.get(query).json()["total"] == 8


# --------------------------------------------------------------------------------- cache


def test_listing_is_cached_and_every_write_invalidates_it(
    client: TestClient, staff: Account, session: Session
) -> None:
    from cartwise.commerce.catalog.models import Product, Variant

    product = new_product(client, staff, "kettle", price="30.00", stock=1)
    first = client.get(P)
    assert first.headers["x-cache"] == "miss"
    second = client.get(P)
    assert second.headers["x-cache"] == "hit"
    assert second.json() == first.json()

    # A write behind the service's back is not seen: proof the listing comes from Redis.
    session.execute(update(Product).values(name="Sneaky"))
    session.commit()
    assert client.get(P).json()["items"][0]["name"] == "Kettle"

    def fresh(url: str = P) -> dict[str, Any]:
        r = client.get(url)
        assert r.headers["x-cache"] == "miss", "a write should have invalidated the cache"
        return r.json()

    client.patch(f"{P}/{product['id']}", json={"name": "Steel Kettle"}, headers=staff.headers)
    assert fresh()["items"][0]["name"] == "Steel Kettle"
    assert client.get(P).headers["x-cache"] == "hit"

    vid = product["variants"][0]["id"]
    client.patch(f"/api/v1/variants/{vid}", json={"price": "25.00"}, headers=staff.headers)
    assert fresh()["items"][0]["price_min"] == "25.00"

    client.post(
        f"{P}/{product['id']}/variants",
        json={"sku": "KETTLE-2", "price": "5.00"},
        headers=staff.headers,
    )
    assert fresh()["items"][0]["price_min"] == "5.00"

    assert client.get(f"{P}?in_stock=true").json()["total"] == 1
    client.put("/api/v1/inventory/KETTLE", json={"on_hand": 0}, headers=staff.headers)
    assert fresh(f"{P}?in_stock=true")["total"] == 0

    new_category(client, staff, "appliances")
    fresh()
    new_product(client, staff, "toaster")
    assert fresh()["total"] == 2
    client.delete(f"{P}/{product['id']}", headers=staff.headers)
    assert [p["slug"] for p in fresh()["items"]] == ["toaster"]
    assert _count(session, Variant) == 3


def test_checkout_stock_changes_invalidate_the_listing(
    client: TestClient, staff: Account, session: Session
) -> None:
    from datetime import timedelta

    from cartwise.commerce.inventory import service as inventory
    from cartwise.platform.types import utcnow

    new_product(client, staff, "vase", stock=1)
    assert client.get(f"{P}?in_stock=true").json()["total"] == 1
    assert client.get(f"{P}?in_stock=true").headers["x-cache"] == "hit"
    # What checkout does: reserve in its own unit of work, then commit.
    inventory.reserve(
        session=session,
        sku="VASE",
        quantity=1,
        order_id="order-1",
        expires_at=utcnow() + timedelta(minutes=15),
    )
    session.commit()
    r = client.get(f"{P}?in_stock=true")
    assert r.headers["x-cache"] == "miss"
    assert r.json()["total"] == 0
    # A rolled-back change does not invalidate anything.
    client.get(P)
    inventory.release_reservations(session=session, order_id="order-1")
    session.rollback()
    assert client.get(P).headers["x-cache"] == "hit"
    inventory.release_reservations(session=session, order_id="order-1")
    session.commit()
    assert client.get(f"{P}?in_stock=true").json()["total"] == 1


def test_categories_are_cached_and_invalidated(client: TestClient, staff: Account) -> None:
    new_category(client, staff, "one")
    assert client.get(C).headers["x-cache"] == "miss"
    assert client.get(C).headers["x-cache"] == "hit"
    new_category(client, staff, "two")
    r = client.get(C)
    assert r.headers["x-cache"] == "miss"
    assert len(r.json()) == 2


# ---------------------------------------------------------------------------------- ETag


def test_product_etag_and_304(client: TestClient, staff: Account) -> None:
    product = new_product(client, staff, "clock")
    url = f"{P}/{product['id']}"
    r = client.get(url)
    etag = r.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert not etag.startswith("W/")
    assert client.get(url).headers["etag"] == etag  # stable for the same content

    for header in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        nm = client.get(url, headers={"If-None-Match": header})
        assert nm.status_code == 304, header
        assert nm.content == b""
        assert nm.headers["etag"] == etag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

    client.patch(url, json={"description": "Ticks."}, headers=staff.headers)
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["description"] == "Ticks."

    # Stock is part of the content too.
    etag2 = changed.headers["etag"]
    client.put("/api/v1/inventory/CLOCK", json={"on_hand": 1}, headers=staff.headers)
    assert client.get(url, headers={"If-None-Match": etag2}).status_code == 200


def test_price_is_exact_decimal(client: TestClient, staff: Account, session: Session) -> None:
    from cartwise.commerce.catalog.models import Variant

    new_product(client, staff, "pen", price="0.10")
    variant = session.exec(select(Variant)).one()
    assert variant.price == Decimal("0.10")
    assert client.get(P).json()["items"][0]["price_min"] == "0.10"
