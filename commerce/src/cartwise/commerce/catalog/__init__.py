"""Cartwise commerce: catalog."""
