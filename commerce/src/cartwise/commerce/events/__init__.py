"""Cartwise commerce: shopper events."""
