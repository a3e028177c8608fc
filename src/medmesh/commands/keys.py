"""`medmesh keys`: the master keyring and the patients' data keys (status, rotation)."""

from __future__ import annotations

from typing import Annotated

import typer

from medmesh.commands._runner import run_with_database
from medmesh.config import Settings
from medmesh.crypto import rotation
from medmesh.store.database import Database

keys_app = typer.Typer(help="Encryption keys (docs/encryption.md).", no_args_is_help=True)


@keys_app.command()
def status() -> None:
    """Master key versions, the active one, and how many data keys each wraps."""

    async def action(database: Database, _settings: Settings) -> None:
        cipher = database.cipher
        counts = await cipher.keys.count_by_master_key()
        active = cipher.provider.active_key_id()
        for key_id in cipher.provider.key_ids():
            marker = " (active)" if key_id == active else ""
            typer.echo(f"{key_id}{marker}: wraps {counts.pop(key_id, 0)} data keys")
        for key_id, count in counts.items():
            typer.echo(f"{key_id} (MISSING from the keyring): wraps {count} data keys")

    run_with_database(action)


@keys_app.command()
def rotate(
    batch_size: Annotated[int, typer.Option(min=1, help="Data keys rewrapped per batch")] = 500,
) -> None:
    """Add a master key version, make it active, and rewrap every data key with it while the
    platform keeps serving (keys not yet rewrapped still open with their old version)."""

    async def action(database: Database, _settings: Settings) -> None:
        report = await rotation.rotate(database.cipher, batch_size=batch_size)
        typer.echo(f"new active master key: {report.new_key_id}")
        typer.echo(f"data keys rewrapped: {report.rewrapped}")
        for key_id, count in sorted(report.by_master_key.items()):
            typer.echo(f"{key_id}: wraps {count} data keys")
        old = [k for k in database.cipher.provider.key_ids() if k != report.new_key_id]
        if old:
            typer.echo(f"old versions can now be retired: medmesh keys retire {old[0]}")

    run_with_database(action)


@keys_app.command()
def retire(key_id: Annotated[str, typer.Argument(help="e.g. mk-1")]) -> None:
    """Remove an old master key version from the keyring (refused while it wraps a key)."""

    async def action(database: Database, _settings: Settings) -> None:
        await rotation.retire(database.cipher, key_id)
        typer.echo(f"retired {key_id}")

    run_with_database(action)
