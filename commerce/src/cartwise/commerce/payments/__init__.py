"""Cartwise commerce: payments."""
