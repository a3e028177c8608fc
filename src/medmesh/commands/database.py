"""`medmesh db …`: the database itself."""

from __future__ import annotations

import typer

from medmesh.commands._runner import run
from medmesh.store.database import Database

db_app = typer.Typer(help="Database administration.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def noop(_: Database) -> None:
        return None

    run(noop)
    typer.echo("database is up to date")
