"""Cartwise commerce: model monitoring records (drift reports and retraining decisions)."""
