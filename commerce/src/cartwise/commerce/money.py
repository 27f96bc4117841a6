"""Money helpers: Decimal amounts with a currency, rounded half-up to pennies."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated

from pydantic import Field

CENT = Decimal("0.01")

# A price on the wire: up to 10 digits before the point, 2 after; never negative.
Amount = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["GBP"])]


def quantize(value: Decimal) -> Decimal:
    """Round to pennies, half-up."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_minor_units(value: Decimal) -> int:
    """Pennies as an integer (for payment providers)."""
    return int((quantize(value) * 100).to_integral_value())
