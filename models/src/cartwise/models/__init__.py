"""Cartwise models: one folder per ML area (data, model, train, tune, evaluate, predict)."""
