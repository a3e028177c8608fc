"""Backend-specific SQL pieces behind one call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the connection's backend."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(
    conn: AsyncConnection, table: Table, key: list[str], values: dict[str, Any], update: list[str]
) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET the `update` columns from the new row."""
    return upsert_rows(conn, table, key, [values], update)


def upsert_rows(
    conn: AsyncConnection,
    table: Table,
    key: list[str],
    rows: list[dict[str, Any]],
    update: list[str],
) -> Any:
    """`upsert` of several rows in one statement (a multi-row VALUES, in the order given)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(rows)
    return statement.on_conflict_do_update(
        index_elements=key, set_={c: statement.excluded[c] for c in update}
    )


def insert_or_lock(conn: AsyncConnection, table: Table, key: list[str], touch: str) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET `touch` to itself, RETURNING every column: each
    row comes back as stored, an existing one locked as `SELECT … FOR UPDATE` would lock it
    (the update that changes nothing still takes the row's lock), a new one as inserted. Rows
    are taken in the order given."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_update(
        index_elements=key, set_={touch: table.c[touch]}
    )
    return statement.returning(*table.c)
