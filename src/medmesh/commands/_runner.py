"""Running an admin action against the configured database (migrated first), with medmesh's
errors turned into a message and a non-zero exit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from medmesh.config import Settings
from medmesh.domain.errors import MedmeshError
from medmesh.services import build_database
from medmesh.store import migrate
from medmesh.store.database import Database

T = TypeVar("T")


def run_with_database(action: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Run `action(database, settings)`; a refusal (MedmeshError, or the ValueError our admin
    functions raise for bad arguments) becomes a one-line message and exit status 1."""

    async def main() -> T:
        settings = Settings()
        database = build_database(settings)
        try:
            await migrate.upgrade(database)
            return await action(database, settings)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except (MedmeshError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def run(action: Callable[[Database], Awaitable[T]]) -> T:
    """Run `action(database)` like `run_with_database`."""

    async def with_settings(database: Database, _: Settings) -> T:
        return await action(database)

    return run_with_database(with_settings)
