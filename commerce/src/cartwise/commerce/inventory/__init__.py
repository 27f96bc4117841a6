"""Cartwise commerce: inventory."""
