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
