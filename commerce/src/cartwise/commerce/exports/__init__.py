"""Cartwise commerce: data exports (CSV and Parquet to object storage)."""
