"""SQL pieces whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, Interval, case, cast, func, literal
from sqlalchemy.sql.selectable import TableValuedAlias


def plus(dialect: str, column: ColumnElement[Any], delta: timedelta) -> ColumnElement[Any]:
    """``column + delta`` for a UTC timestamp column."""
    if dialect == "sqlite":
        # SQLite keeps timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text; strftime with %f gives
        # the same layout (to the millisecond), so the result compares correctly as text.
        return func.strftime("%Y-%m-%d %H:%M:%f", column, f"+{delta.total_seconds():.3f} seconds")
    return column + literal(delta, Interval())


def json_number(dialect: str, column: ColumnElement[Any], key: str) -> ColumnElement[Any]:
    """A numeric JSON property as a float, NULL when missing or not a number (never an error)."""
    if dialect == "sqlite":
        path = f"$.{key}"
        return case(
            (
                func.json_type(column, path).in_(["integer", "real"]),
                cast(func.json_extract(column, path), Float),
            ),
            else_=None,
        )
    # A bare cast would fail the whole query on one event whose property is not a number.
    return case(
        (func.json_typeof(column.op("->")(key)) == "number", cast(column.op("->>")(key), Float)),
        else_=None,
    )


def json_int_array(dialect: str, column: ColumnElement[Any]) -> TableValuedAlias:
    """A table-valued function over a JSON array of integers, with one column ``value``."""
    if dialect == "sqlite":
        return func.json_each(column).table_valued("value", name="item")
    return func.json_array_elements_text(column).table_valued("value", name="item").render_derived()


def int_value(item: TableValuedAlias) -> ColumnElement[Any]:
    """The ``value`` column of :func:`json_int_array` as an integer (PostgreSQL yields text)."""
    return cast(item.c.value, Integer)
