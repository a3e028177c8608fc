"""`medmesh patient create` and `medmesh care-team …`: patients and who cares for them."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.commands._runner import run
from medmesh.domain.errors import NotFound
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.users import Users

patient_app = typer.Typer(help="Patients.", no_args_is_help=True)
care_team_app = typer.Typer(
    help="Who cares for a patient (and so may see their record).", no_args_is_help=True
)


@patient_app.command("create")
def patient_create(
    family: Annotated[str, typer.Option(help="Family name")],
    given: Annotated[str, typer.Option(help="Given name")],
    identifier: Annotated[str, typer.Option(help="Medical record number")],
    system: Annotated[
        str, typer.Option(help="Identifier system")
    ] = provisioning.DEFAULT_IDENTIFIER_SYSTEM,
    birth_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    gender: Annotated[str | None, typer.Option(help="male, female, other or unknown")] = None,
) -> None:
    """Create a patient and print their id."""
    if gender not in (None, "male", "female", "other", "unknown"):
        raise typer.BadParameter("gender must be male, female, other or unknown")
    try:
        born = date.fromisoformat(birth_date) if birth_date else None
    except ValueError:
        raise typer.BadParameter("birth date must be YYYY-MM-DD") from None
    patient = run(
        lambda db: provisioning.create_patient(
            db,
            family=family,
            given=given,
            identifier=identifier,
            identifier_system=system,
            birth_date=born,
            gender=gender,
        )
    )
    typer.echo(patient.id)


@patient_app.command("unmerge")
def patient_unmerge(
    merge_id: Annotated[str, typer.Argument(help="The merge id the A40's ACK named")],
    by: Annotated[str, typer.Option(help="Username of the organisation admin deciding it")],
) -> None:
    """Undo a merge of two patients (HL7 ADT A40): what it moved goes back."""
    record = run(lambda db: provisioning.undo_merge(db, merge_id, by_username=by))
    typer.echo(f"{record.merged_id} separated from {record.survivor_id}")


async def _user_id(database: Database, username: str) -> str:
    async with database.read() as conn:
        user = await Users(conn).find_by_username(username)
    if user is None:
        raise NotFound(f"no user named {username}")
    return user.id


@care_team_app.command("add")
def care_team_add(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    username: Annotated[str, typer.Argument(help="A clinician's username")],
    role: Annotated[str, typer.Option(help="primary, nurse, escalation or member")] = "member",
) -> None:
    """Put a clinician on a patient's care team."""

    async def add(database: Database) -> None:
        user_id = await _user_id(database, username)
        await provisioning.add_to_care_team(
            database, patient_id, user_id, role=role, added_by="cli"
        )

    run(add)
    typer.echo(f"{username} is on the care team ({role})")


@care_team_app.command("remove")
def care_team_remove(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    username: Annotated[str, typer.Argument(help="A clinician's username")],
) -> None:
    """Take a clinician off a patient's care team."""

    async def remove(database: Database) -> bool:
        user_id = await _user_id(database, username)
        async with database.write() as conn:
            return await CareTeams(conn).remove(patient_id, user_id)

    if not run(remove):
        typer.echo("error: not on this care team", err=True)
        raise typer.Exit(1)
    typer.echo("removed")
