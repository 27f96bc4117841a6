"""Suppliers, purchase orders and goods receipts."""
