"""`medmesh backup` / `medmesh restore`: copies of the main database, never of the keys, and a
restore that reports (and can delete again) the patients erased after the copy was taken."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmesh.access.restored_erasures import delete_erased_rows, erased_patients_present
from medmesh.commands._runner import run_with_database
from medmesh.commands.erasure import audit_erasure
from medmesh.config import Settings
from medmesh.crypto.local import default_key_paths
from medmesh.domain.errors import MedmeshError
from medmesh.store import backup as copies
from medmesh.store.database import Database


def _key_locations(settings: Settings) -> tuple[Path, Path]:
    default_keyring, default_store = default_key_paths(settings.database_url)
    return (
        settings.master_key_file or default_keyring,
        settings.key_store_path or default_store,
    )


def _copy(action: str, settings: Settings, file: Path) -> None:
    operation = copies.backup if action == "backup" else copies.restore
    try:
        operation(settings.database_url, file)
    except (MedmeshError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def backup(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The backup file to write")],
) -> None:
    """Copy the main database to FILE while the platform keeps running. The copy holds no key:
    back up the master keyring separately, and keep the key store out of long-lived backups
    (docs/backups.md)."""
    settings = Settings()
    _copy("backup", settings, file)
    keyring, store = _key_locations(settings)
    typer.echo(f"backup written to {file} (main database only, no key material)")
    typer.echo(f"not in it: the master keyring {keyring} (back it up separately)")
    typer.echo(f"not in it: the key store {store} (replicate it; see docs/backups.md)")


def restore(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A medmesh backup")],
    delete_erased: Annotated[
        bool | None,
        typer.Option(
            "--delete-erased/--keep-erased",
            help="Delete the rows of patients erased after the backup (asked when not given)",
        ),
    ] = None,
) -> None:
    """Replace the main database with FILE (stop every medmesh process first), upgrade it, and
    report the patients it holds who were erased since: their keys are gone, so their rows
    are unreadable; they can be deleted again."""
    settings = Settings()
    _copy("restore", settings, file)
    typer.echo(f"restored {file}")

    async def report(database: Database, _settings: Settings) -> list[str]:
        return await erased_patients_present(database)

    erased = run_with_database(report)
    if not erased:
        typer.echo("erased patients in the backup: none")
        return
    typer.echo(f"erased patients in the backup: {len(erased)} (their data keys are destroyed)")
    for patient_id in erased:
        typer.echo(f"  {patient_id}")
    if delete_erased is None:
        delete_erased = typer.confirm("delete their rows again?", default=True)
    if not delete_erased:
        typer.echo("kept: their rows stay as unreadable ciphertext until deleted")
        return

    async def delete(database: Database, _settings: Settings) -> dict[str, int]:
        deleted = await delete_erased_rows(database, erased)
        for patient_id in deleted:
            await audit_erasure(database, patient_id, "restore", "0", "erased-before-restore")
        return deleted

    deleted = run_with_database(delete)
    for patient_id, rows in deleted.items():
        typer.echo(f"deleted again: {patient_id} ({rows} rows)")
