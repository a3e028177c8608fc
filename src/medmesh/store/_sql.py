"""Backend-specific SQL pieces behind one call, each statement built once a backend.

Building a SQLAlchemy statement, and the cache key SQLAlchemy makes of it at every execution,
costs more CPU than executing it (about 0.2 ms of the 0.45 ms a statement costs on the
benchmark machine, docs/benchmarks.md "Statements built once"). So the statements the hot
paths run are built once, with bound parameters, and executed with their values; a statement
object executed again keeps its cache key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

_built: dict[tuple[object, ...], Any] = {}


def _dialect(conn: AsyncConnection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the connection's backend, without values: execute
    it with the rows as parameters."""
    key = ("ignore", conn.dialect.name, table)
    if key not in _built:
        _built[key] = _dialect(conn).insert(table).on_conflict_do_nothing()
    return _built[key]


def upsert(
    conn: AsyncConnection, table: Table, key: tuple[str, ...], update: tuple[str, ...]
) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET the `update` columns from the new row, without
    values: execute it with a row, or with a list of rows (each upserted in the order given;
    no two with the same key)."""
    cache_key = ("upsert", conn.dialect.name, table, key, update)
    if cache_key not in _built:
        statement = _dialect(conn).insert(table)
        _built[cache_key] = statement.on_conflict_do_update(
            index_elements=list(key), set_={c: statement.excluded[c] for c in update}
        )
    return _built[cache_key]


def insert_or_lock(conn: AsyncConnection, table: Table, key: tuple[str, ...], touch: str) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET `touch` to itself, RETURNING every column: each
    row comes back as stored, an existing one locked as `SELECT … FOR UPDATE` would lock it
    (the update that changes nothing still takes the row's lock), a new one as inserted. Rows
    are taken in the order given."""
    cache_key = ("lock", conn.dialect.name, table, key, touch)
    if cache_key not in _built:
        statement = (
            _dialect(conn)
            .insert(table)
            .on_conflict_do_update(index_elements=list(key), set_={touch: table.c[touch]})
        )
        _built[cache_key] = statement.returning(*table.c)
    return _built[cache_key]
