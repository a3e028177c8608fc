"""Alembic environment: always handed a live connection by medmesh.store.migrate."""

from __future__ import annotations

from alembic import context

from medmesh.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `medmesh db upgrade`, which supplies a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
