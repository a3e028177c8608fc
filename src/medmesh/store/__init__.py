"""Persistence: SQL schema, migrations and repositories on SQLite (default) or PostgreSQL."""

from medmesh.store.database import Database

__all__ = ["Database"]
