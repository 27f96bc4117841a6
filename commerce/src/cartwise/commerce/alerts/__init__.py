"""Alerts for staff: things a person should look at (orders held for fraud review, blocks)."""
