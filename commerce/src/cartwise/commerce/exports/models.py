"""Tables and schemas of this domain (filled in by the exports work)."""
