"""Cartwise commerce: orders."""
