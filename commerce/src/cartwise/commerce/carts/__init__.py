"""Cartwise commerce: carts."""
