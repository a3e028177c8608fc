"""`medmesh patient erase | hold | verify-certificate`: erasure (crypto-shredding) from the
command line, added to the existing `patient` commands."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from medmesh.access.audit.entries import AuditEntry
from medmesh.access.erasure import erase_patient, set_legal_hold, verify_certificate
from medmesh.commands._runner import run_with_database
from medmesh.config import Settings
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database


def erase(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    reason: Annotated[str, typer.Option(help="Why (e.g. the patient's request of a date)")],
    requested_by: Annotated[str, typer.Option(help="Who asked for it")],
) -> None:
    """Erase a patient: destroy their data key, delete their rows, print the signed
    certificate. Refused under a legal hold or within the retention period."""

    async def action(database: Database, settings: Settings) -> str:
        days = settings.erasure_retention_days
        certificate = await erase_patient(
            database,
            patient_id,
            reason=reason,
            requested_by=requested_by,
            retention=timedelta(days=days) if days else None,
        )
        await audit_erasure(database, patient_id, requested_by, "0", "operator")
        return certificate.to_json()

    typer.echo(run_with_database(action))


async def audit_erasure(
    database: Database, patient_id: str, who: str, outcome: str, basis: str, subtype: str = "erase"
) -> None:
    """Erasure and legal holds at the command line are in the audit trail too."""
    async with database.write() as conn:
        await AuditLog(conn).append(
            AuditEntry(
                action="D" if subtype == "erase" else "U",
                subtype=subtype,
                outcome=outcome,
                actor_kind="cli",
                actor_id="cli",
                actor_name=who[:200],
                resource_type="Patient",
                resource_id=patient_id,
                patient_id=patient_id,
                basis=basis,
            )
        )


def hold(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    on: Annotated[bool, typer.Option("--on/--off", help="Place or lift the legal hold")],
) -> None:
    """Place (--on) or lift (--off) a legal hold: a held record cannot be erased."""

    async def action(database: Database, _settings: Settings) -> None:
        await set_legal_hold(database, patient_id, on)
        await audit_erasure(database, patient_id, "operator", "0", "operator", "legal-hold")

    run_with_database(action)
    typer.echo(f"legal hold {'placed' if on else 'lifted'}")


def verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Certificate JSON")],
) -> None:
    """Check an erasure certificate's signature against this platform's signing key."""

    async def action(database: Database, _settings: Settings) -> bytes:
        return database.cipher.provider.signing_public_key()

    public_key = run_with_database(action)
    if not verify_certificate(file.read_text(), public_key):
        typer.echo("INVALID: the certificate was altered or not signed by this platform", err=True)
        raise typer.Exit(1)
    typer.echo("valid: signed by this platform and unaltered")


def add_erasure_commands(patient_app: typer.Typer) -> None:
    patient_app.command("erase")(erase)
    patient_app.command("hold")(hold)
    patient_app.command("verify-certificate")(verify)
