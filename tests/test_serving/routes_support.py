"""Helpers of the ML route tests: a double of the MLClient port and catalogue data."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from cartwise.commerce.catalog.models import Category, Product, ProductStatus, Variant
from cartwise.commerce.experiments import service as experiments
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.orders.models import Order, OrderLine, OrderStatus
from cartwise.platform.types import utcnow
from cartwise.serving.runtime.errors import ModelUnavailable

MODEL = {"name": "cartwise-recommender", "version": 3, "alias": "champion"}


@dataclass
class Call:
    """One call the double received."""

    area: str
    method: str
    timeout_s: float
    kwargs: dict[str, Any]


@dataclass
class FakeML:
    """A double of the MLClient port: answers chosen per (area, method), calls recorded.

    An answer is a dict (returned), an exception instance (raised), a callable of the keyword
    arguments (its result, awaited if a coroutine) or ``"hang"`` (never answers in time). With
    no answer set the double behaves like an untrained model.
    """

    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def set(self, area: str, method: str, answer: Any) -> None:
        """Choose what ``area.method`` answers."""
        self.answers[(area, method)] = answer

    def calls_to(self, area: str, method: str) -> list[Call]:
        """The calls received by ``area.method``, oldest first."""
        return [c for c in self.calls if (c.area, c.method) == (area, method)]

    async def call(
        self, area: str, method: str, *, timeout_s: float, **kwargs: Any
    ) -> dict[str, Any]:
        """The port's only method."""
        self.calls.append(Call(area, method, timeout_s, kwargs))
        answer = self.answers.get((area, method))
        if answer is None:
            raise ModelUnavailable(f"{area} is not trained")
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.sleep(timeout_s * 10)
            return {"model": MODEL, "cached": False, "items": []}
        if callable(answer):
            result = answer(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            return dict(result)
        return dict(answer)


def category(session: Session, name: str, parent: Category | None = None) -> Category:
    """A committed category."""
    row = Category(
        name=name,
        slug=f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:6]}",
        parent_id=parent.id if parent else None,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def product(
    session: Session,
    name: str,
    *,
    cat: Category | None = None,
    price: str = "10.00",
    stock: int = 5,
    description: str = "",
    status: ProductStatus = ProductStatus.active,
) -> Variant:
    """A committed product with one variant and its stock; returns the variant."""
    suffix = uuid.uuid4().hex[:8]
    row = Product(
        name=name,
        slug=f"p-{suffix}",
        description=description,
        category_id=cat.id if cat else None,
        status=status,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    variant = Variant(product_id=row.id, sku=f"SKU-{suffix.upper()}", price=Decimal(price))
    session.add(variant)
    session.flush()
    inventory.ensure_stock_row(session=session, sku=variant.sku, on_hand=stock)
    session.commit()
    session.refresh(variant)
    return variant


def sell(
    session: Session,
    variant: Variant,
    quantity: int,
    *,
    user_id: int | None = None,
    status: OrderStatus = OrderStatus.paid,
    days_ago: float = 1,
) -> Order:
    """A committed order of ``quantity`` units of the variant (no stock movement)."""
    total = variant.price * quantity
    order = Order(
        user_id=user_id,
        email="buyer@example.com",
        status=status,
        currency="GBP",
        subtotal=total,
        total=total,
        created_at=utcnow() - timedelta(days=days_ago),
    )
    session.add(order)
    session.flush()
    session.add(
        OrderLine(
            order_id=order.id,
            variant_id=variant.id,
            product_id=variant.product_id,
            sku=variant.sku,
            product_name="x",
            quantity=quantity,
            unit_price=variant.price,
            line_total=total,
        )
    )
    session.commit()
    return order


def items_answer(*product_ids: int, strategy: str = "personal") -> Callable[..., dict[str, Any]]:
    """A recommend answer listing the ids (whatever ``allowed`` says: the ingress filters)."""

    def answer(**_: Any) -> dict[str, Any]:
        return {
            "items": [
                {"product_id": pid, "score": 1.0 - i / 100} for i, pid in enumerate(product_ids)
            ],
            "strategy": strategy,
            "model": MODEL,
            "cached": False,
        }

    return answer


@pytest.fixture(name="fake_ml")
def fake_ml_fixture() -> FakeML:
    """The ML client double."""
    return FakeML()


@pytest.fixture(name="ml_app")
def ml_app_fixture(settings: Any, fake_ml: FakeML) -> FastAPI:
    """The served app (commerce + ML routes) on the current backend, with the double."""
    from cartwise.serving.asgi import create_app

    experiments.clear_cache()
    app = create_app({**settings.model_dump(), "feast_push_enabled": False}, ml=fake_ml)
    # Check the catalogue version on every request (not every 0.25 s) so writes show at once.
    app.state.ml_ingress.catalog.version_check_s = 0.0
    return app


@pytest.fixture(name="ml")
def ml_fixture(ml_app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client on the served app."""
    with TestClient(ml_app, raise_server_exceptions=False) as c:
        yield c
    experiments.clear_cache()
