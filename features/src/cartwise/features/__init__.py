"""Cartwise features: commerce exports, feature tables, the Feast store and the event push."""

from cartwise.features.feast_import import prepare as _prepare_feast

# Before any module of this package imports feast (see feast_import).
_prepare_feast()
