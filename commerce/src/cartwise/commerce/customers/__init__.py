"""Cartwise commerce: customers."""
