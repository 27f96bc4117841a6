"""Cart services."""

from __future__ import annotations

from sqlmodel import Session

from cartwise.platform.settings import Settings


def merge_guest_cart(
    *, session: Session, settings: Settings, user_id: int, cart_id: str, token: str
) -> None:
    """Merge a guest cart into the user's active cart (a wrong token is ignored)."""
    raise NotImplementedError
