"""Bulk imports of outside data into the commerce database."""
