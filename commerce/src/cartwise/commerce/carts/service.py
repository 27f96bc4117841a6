"""Cart services: guest carts behind a secret token, user carts behind their owner.

Prices are never stored on a cart: every view re-reads the variants, and checkout re-reads
them again inside its own transaction.

Every change to a cart's lines first runs a conditional ``UPDATE cart ... WHERE status =
'active'``. On PostgreSQL that row lock serialises edits of one cart against each other and
against checkout (which claims the cart the same way), so a line cannot slip in after checkout
has read the cart; on SQLite the write lock does the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from cartwise.commerce.carts.models import (
    Cart,
    CartItem,
    CartItemAdd,
    CartItemPublic,
    CartPublic,
    CartStatus,
)
from cartwise.commerce.catalog.models import Product, ProductStatus, Variant
from cartwise.commerce.inventory import service as inventory
from cartwise.commerce.money import quantize
from cartwise.platform.auth import Principal
from cartwise.platform.errors import Conflict, NotFound, Unprocessable
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow


class CartNotActive(Conflict):
    """The cart was already checked out or merged."""

    slug = "cart-not-active"
    title = "Cart is not active"


@dataclass(frozen=True, slots=True)
class CartLine:
    """A cart line joined with its variant and product (current prices)."""

    item: CartItem
    variant: Variant
    product: Product

    @property
    def purchasable(self) -> bool:
        """Whether the SKU is still for sale."""
        return self.variant.is_active and self.product.status == ProductStatus.active


def hash_token(token: str) -> str:
    """The stored form of a guest cart token (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(cart: Cart, token: str | None) -> bool:
    """Whether a presented token opens this guest cart (constant-time comparison)."""
    if cart.token_hash is None or not token:
        return False
    return hmac.compare_digest(cart.token_hash, hash_token(token))


def can_access(cart: Cart, principal: Principal | None, token: str | None) -> bool:
    """A user cart opens for its owner; a guest cart for the holder of its token."""
    if cart.user_id is not None:
        return principal is not None and principal.subject == cart.user_id
    return token_matches(cart, token)


def get_cart_for(
    *, session: Session, cart_id: str, principal: Principal | None, token: str | None
) -> Cart:
    """A cart the caller may reach; 404 otherwise (never 403, so existence is not revealed)."""
    cart = session.get(Cart, cart_id)
    if cart is None or not can_access(cart, principal, token):
        raise NotFound("Cart not found.")
    return cart


def active_user_cart(*, session: Session, user_id: int) -> Cart | None:
    """The user's newest active cart, if any."""
    stmt = (
        select(Cart)
        .where(Cart.user_id == user_id, Cart.status == CartStatus.active)
        .order_by(col(Cart.created_at).desc(), col(Cart.id))
    )
    return session.exec(stmt).first()


def create_cart(
    *, session: Session, settings: Settings, principal: Principal | None
) -> tuple[Cart, str | None, bool]:
    """A guest cart with a fresh token, or the user's active cart; returns (cart, token, new)."""
    if principal is not None:
        existing = active_user_cart(session=session, user_id=principal.subject)
        if existing is not None:
            return existing, None, False
        cart = Cart(user_id=principal.subject, currency=settings.currency)
        token = None
    else:
        token = secrets.token_urlsafe(32)
        cart = Cart(token_hash=hash_token(token), currency=settings.currency)
    session.add(cart)
    session.commit()
    session.refresh(cart)
    return cart, token, True


def cart_lines(session: Session, cart_id: str) -> list[CartLine]:
    """The cart's lines with their variants and products, in the order they were added."""
    stmt = (
        select(CartItem, Variant, Product)
        .join(Variant, col(CartItem.variant_id) == col(Variant.id))
        .join(Product, col(Variant.product_id) == col(Product.id))
        .where(CartItem.cart_id == cart_id)
        .order_by(col(CartItem.id))
    )
    return [CartLine(item, variant, product) for item, variant, product in session.exec(stmt)]


def cart_public(*, session: Session, cart: Cart, token: str | None = None) -> CartPublic:
    """The API view of a cart, priced at the variants' current prices."""
    lines = cart_lines(session, cart.id)
    available = inventory.available_by_sku(session=session, skus=[ln.variant.sku for ln in lines])
    items: list[CartItemPublic] = []
    subtotal = Decimal("0.00")
    for line in lines:
        assert line.item.id is not None
        assert line.variant.id is not None
        assert line.product.id is not None
        unit_price = quantize(line.variant.price)
        line_total = quantize(unit_price * line.item.quantity)
        subtotal += line_total
        items.append(
            CartItemPublic(
                id=line.item.id,
                variant_id=line.variant.id,
                sku=line.variant.sku,
                product_id=line.product.id,
                product_name=line.product.name,
                quantity=line.item.quantity,
                unit_price=unit_price,
                line_total=line_total,
                available=max(available.get(line.variant.sku, 0), 0),
            )
        )
    return CartPublic(
        id=cart.id,
        status=cart.status,
        currency=cart.currency,
        items=items,
        subtotal=quantize(subtotal),
        item_count=sum(i.quantity for i in items),
        token=token,
    )


def _resolve_variant(session: Session, data: CartItemAdd) -> tuple[Variant, Product]:
    if data.sku is None and data.variant_id is None:
        raise Unprocessable("Give a sku or a variant_id.", slug="validation-error")
    variant: Variant | None
    if data.sku is not None:
        variant = session.exec(select(Variant).where(Variant.sku == data.sku)).first()
        if variant is not None and data.variant_id is not None and variant.id != data.variant_id:
            raise Unprocessable("sku and variant_id name different variants.")
    else:
        variant = session.get(Variant, data.variant_id)
    if variant is None:
        raise NotFound("No product has this SKU.", slug="unknown-sku")
    product = session.get(Product, variant.product_id)
    if product is None:
        raise NotFound("No product has this SKU.", slug="unknown-sku")
    if not variant.is_active or product.status != ProductStatus.active:
        raise Unprocessable(f"{variant.sku} is not for sale.", slug="not-for-sale", sku=variant.sku)
    return variant, product


def _claim_active(session: Session, cart_id: str) -> None:
    """Lock the cart row for this transaction, provided it is still active."""
    result = session.execute(
        update(Cart)
        .where(col(Cart.id) == cart_id, col(Cart.status) == CartStatus.active)
        .values(updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise CartNotActive("This cart has already been checked out or merged.")


def _check_quantity(
    session: Session, settings: Settings, variant: Variant, quantity: int, increase: bool
) -> None:
    if quantity > settings.max_line_quantity:
        session.rollback()
        raise Unprocessable(
            f"At most {settings.max_line_quantity} units of one SKU per order.",
            slug="quantity-limit",
            sku=variant.sku,
            max_line_quantity=settings.max_line_quantity,
        )
    if increase:
        available = inventory.available_by_sku(session=session, skus=[variant.sku])[variant.sku]
        if quantity > available:
            session.rollback()
            raise inventory.OutOfStock(
                f"Only {max(available, 0)} units of {variant.sku} are available.",
                sku=variant.sku,
                available=max(available, 0),
            )


def add_item(*, session: Session, settings: Settings, cart: Cart, data: CartItemAdd) -> Cart:
    """Add a SKU to the cart; the same SKU again increases its line. Commits."""
    variant, _product = _resolve_variant(session, data)
    if variant.currency != cart.currency:
        raise Unprocessable(
            f"{variant.sku} is priced in {variant.currency}, the cart in {cart.currency}.",
            slug="currency-mismatch",
        )
    _claim_active(session, cart.id)
    existing = session.exec(
        select(CartItem).where(CartItem.cart_id == cart.id, CartItem.variant_id == variant.id)
    ).first()
    if existing is not None:
        quantity = existing.quantity + data.quantity
        _check_quantity(session, settings, variant, quantity, increase=True)
        existing.quantity = quantity
        session.add(existing)
    else:
        lines = session.exec(
            select(func.count()).select_from(CartItem).where(CartItem.cart_id == cart.id)
        ).one()
        if lines >= settings.max_cart_lines:
            session.rollback()
            raise Unprocessable(
                f"A cart holds at most {settings.max_cart_lines} lines.",
                slug="cart-full",
                max_cart_lines=settings.max_cart_lines,
            )
        _check_quantity(session, settings, variant, data.quantity, increase=True)
        assert variant.id is not None
        session.add(CartItem(cart_id=cart.id, variant_id=variant.id, quantity=data.quantity))
    session.commit()
    session.refresh(cart)
    return cart


def _get_item(session: Session, cart: Cart, item_id: int) -> CartItem:
    item = session.get(CartItem, item_id)
    if item is None or item.cart_id != cart.id:
        raise NotFound("Cart item not found.")
    return item


def update_item(
    *, session: Session, settings: Settings, cart: Cart, item_id: int, quantity: int
) -> Cart:
    """Set the quantity of a line. Commits."""
    item = _get_item(session, cart, item_id)
    _claim_active(session, cart.id)
    variant = session.get(Variant, item.variant_id)
    assert variant is not None
    _check_quantity(session, settings, variant, quantity, increase=quantity > item.quantity)
    item.quantity = quantity
    session.add(item)
    session.commit()
    session.refresh(cart)
    return cart


def remove_item(*, session: Session, cart: Cart, item_id: int) -> Cart:
    """Remove a line from the cart. Commits."""
    item = _get_item(session, cart, item_id)
    _claim_active(session, cart.id)
    session.delete(item)
    session.commit()
    session.refresh(cart)
    return cart


def merge_guest_cart(
    *, session: Session, settings: Settings, user_id: int, cart_id: str, token: str
) -> None:
    """Merge a guest cart into the user's active cart (a wrong token is ignored).

    Quantities of the same SKU add up, capped at ``max_line_quantity``; lines beyond
    ``max_cart_lines`` are dropped. The guest cart ends ``merged``. Commits.
    """
    guest = session.get(Cart, cart_id)
    if guest is None or guest.user_id is not None or guest.status != CartStatus.active:
        return
    if not token_matches(guest, token):
        return
    # Claim the guest cart first, so two concurrent logins cannot merge it twice.
    claimed = session.execute(
        update(Cart)
        .where(col(Cart.id) == guest.id, col(Cart.status) == CartStatus.active)
        .values(status=CartStatus.merged, updated_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return
    target = active_user_cart(session=session, user_id=user_id)
    if target is None:
        target = Cart(user_id=user_id, currency=guest.currency)
        session.add(target)
        session.flush()
    else:
        try:
            _claim_active(session, target.id)
        except CartNotActive:  # checked out concurrently: keep the guest cart as it was
            return
    guest_items = session.exec(
        select(CartItem).where(CartItem.cart_id == guest.id).order_by(col(CartItem.id))
    ).all()
    mine = {
        i.variant_id: i for i in session.exec(select(CartItem).where(CartItem.cart_id == target.id))
    }
    for item in guest_items:
        current = mine.get(item.variant_id)
        if current is not None:
            current.quantity = min(current.quantity + item.quantity, settings.max_line_quantity)
            session.add(current)
        elif len(mine) < settings.max_cart_lines:
            added = CartItem(
                cart_id=target.id,
                variant_id=item.variant_id,
                quantity=min(item.quantity, settings.max_line_quantity),
            )
            session.add(added)
            mine[item.variant_id] = added
    session.commit()
