"""Cartwise commerce: outbox."""
