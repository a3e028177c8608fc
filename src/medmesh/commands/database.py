"""`medmesh db …`: the database itself."""

from __future__ import annotations

import typer

from medmesh.commands._runner import run, run_with_database
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.rollup_backfill import patients_with_readings, rebuild

db_app = typer.Typer(help="Database administration.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def noop(_: Database) -> None:
        return None

    run(noop)
    typer.echo("database is up to date")


@db_app.command("backfill-rollups")
def db_backfill_rollups() -> None:
    """Build the chart rollups of readings stored before they existed (once, after upgrading
    to them); rebuilds each patient's rollups from their readings, so it is safe to re-run."""

    async def action(database: Database, _: Settings) -> tuple[int, int]:
        async with database.read() as conn:
            ids = await patients_with_readings(conn)
        readings = 0
        for patient_id in ids:
            async with database.write() as conn:
                readings += await rebuild(conn, patient_id)
        return len(ids), readings

    patients, readings = run_with_database(action)
    typer.echo(f"rollups rebuilt for {patients} patients from {readings} readings")
