"""Cartwise commerce: catalog, inventory, customers, carts, orders, payments, vouchers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """Build the commerce FastAPI application (imported lazily)."""
    from cartwise.commerce.app import create_app as _create_app

    return _create_app(*args, **kwargs)
