"""Cartwise commerce: vouchers."""
