"""Cartwise features: commerce exports, feature tables, the Feast store and the event push."""
