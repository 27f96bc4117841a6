"""Cartwise pipelines and the ``cartwise`` command-line tool (may compose every member)."""
