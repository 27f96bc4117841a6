"""HTTP routes of the carts domain.

A guest cart is reached with the ``X-Cart-Token`` header returned once when it was created; a
user cart only by its owner. Anyone else gets 404, never 403, so a cart's existence is not
revealed. Item routes answer with the whole cart at current prices.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Response, status

from cartwise.commerce.carts import service
from cartwise.commerce.carts.models import Cart, CartItemAdd, CartItemUpdate, CartPublic
from cartwise.commerce.deps import IntId, OptionalPrincipalDep, SessionDep, SettingsDep
from cartwise.platform.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["carts"], responses=PROBLEM_RESPONSES)

CartId = Annotated[str, Path(min_length=1, max_length=32)]
CartToken = Annotated[
    str | None,
    Header(max_length=128, description="The secret token of a guest cart."),
]


def _reachable_cart(
    cart_id: CartId,
    session: SessionDep,
    principal: OptionalPrincipalDep,
    x_cart_token: CartToken = None,
) -> Cart:
    return service.get_cart_for(
        session=session, cart_id=cart_id, principal=principal, token=x_cart_token
    )


# The cart in the path, if the caller owns it or holds its token; 404 otherwise.
ReachableCart = Annotated[Cart, Depends(_reachable_cart)]


@router.post(
    "/carts",
    response_model=CartPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CartPublic, "description": "The user's existing active cart"}},
)
def create_cart(
    response: Response, session: SessionDep, settings: SettingsDep, principal: OptionalPrincipalDep
) -> CartPublic:
    """Create a guest cart (its token is in the body, once) or return the user's active cart."""
    cart, token, created = service.create_cart(
        session=session, settings=settings, principal=principal
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return service.cart_public(session=session, cart=cart, token=token)


@router.get("/carts/{cart_id}", response_model=CartPublic)
def read_cart(cart: ReachableCart, session: SessionDep) -> CartPublic:
    """A cart with its lines at current prices."""
    return service.cart_public(session=session, cart=cart)


@router.post("/carts/{cart_id}/items", response_model=CartPublic)
def add_cart_item(
    cart: ReachableCart, data: CartItemAdd, session: SessionDep, settings: SettingsDep
) -> CartPublic:
    """Add a SKU (or variant id) to a cart; adding it again increases the line."""
    cart = service.add_item(session=session, settings=settings, cart=cart, data=data)
    return service.cart_public(session=session, cart=cart)


@router.patch("/carts/{cart_id}/items/{item_id}", response_model=CartPublic)
def update_cart_item(
    cart: ReachableCart,
    item_id: IntId,
    data: CartItemUpdate,
    session: SessionDep,
    settings: SettingsDep,
) -> CartPublic:
    """Change the quantity of a cart line."""
    cart = service.update_item(
        session=session, settings=settings, cart=cart, item_id=item_id, quantity=data.quantity
    )
    return service.cart_public(session=session, cart=cart)


@router.delete("/carts/{cart_id}/items/{item_id}", response_model=CartPublic)
def remove_cart_item(cart: ReachableCart, item_id: IntId, session: SessionDep) -> CartPublic:
    """Remove a line from a cart; answers with the cart."""
    cart = service.remove_item(session=session, cart=cart, item_id=item_id)
    return service.cart_public(session=session, cart=cart)
