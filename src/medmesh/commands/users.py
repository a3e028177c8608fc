"""`medmesh user …` and `medmesh org …`: people's accounts and their organisations, from the
server's command line. Passwords are read from a hidden prompt or standard input, never from
an argument (arguments end up in shell history and process listings)."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, Role
from medmesh.commands._runner import run

user_app = typer.Typer(
    help="People's accounts: patients, clinicians, org admins.", no_args_is_help=True
)
org_app = typer.Typer(help="Organisations accounts belong to.", no_args_is_help=True)


class AccountRole(StrEnum):
    PATIENT = Role.PATIENT.value
    CLINICIAN = Role.CLINICIAN.value
    ORG_ADMIN = Role.ORG_ADMIN.value


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            typer.echo("error: no password on standard input", err=True)
            raise typer.Exit(1)
        return password
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input"
    ),
]
Username = Annotated[str, typer.Argument(help="The account's username")]


@user_app.command("create")
def create(
    username: Username,
    name: Annotated[str, typer.Option("--name", help='Display name, e.g. "Dr Ada Lovelace"')],
    role: Annotated[AccountRole, typer.Option("--role", help="patient, clinician or org-admin")],
    patient: Annotated[
        str | None, typer.Option("--patient", help="The patient record (patient accounts only)")
    ] = None,
    organization: Annotated[
        str, typer.Option("--organization", help="Organisation id")
    ] = DEFAULT_ORGANIZATION,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an account and print its id. Clinicians and org admins set up their
    authenticator app at their first sign-in."""
    password = _password(password_stdin)
    account = run(
        lambda db: provisioning.create_user(
            db,
            username=username,
            display_name=name,
            role=Role(role.value),
            password=password,
            organization_id=organization,
            patient_id=patient,
        )
    )
    typer.echo(account.id)


@user_app.command("reset-password")
def reset_password(username: Username, password_stdin: PasswordStdin = False) -> None:
    """Set a new password (the person's choice, checked by the rules); unlocks the account."""
    password = _password(password_stdin)
    run(lambda db: provisioning.reset_password(db, username, password))
    typer.echo("password changed")


@user_app.command("reset-totp")
def reset_totp(username: Username) -> None:
    """Forget the account's authenticator (a lost phone); staff set up a new one at their
    next sign-in."""
    run(lambda db: provisioning.reset_totp(db, username))
    typer.echo("two-step sign-in reset")


@user_app.command("unlock")
def unlock(username: Username) -> None:
    """Lift a lock after too many failed sign-ins."""
    run(lambda db: provisioning.unlock(db, username))
    typer.echo("unlocked")


@user_app.command("disable")
def disable(username: Username) -> None:
    """Stop the account from signing in; its open sessions end at their next request."""
    run(lambda db: provisioning.set_disabled(db, username, disabled=True))
    typer.echo("disabled")


@user_app.command("enable")
def enable(username: Username) -> None:
    """Let a disabled account sign in again."""
    run(lambda db: provisioning.set_disabled(db, username, disabled=False))
    typer.echo("enabled")


@org_app.command("create")
def org_create(
    organization_id: Annotated[str, typer.Argument(help="A short id, e.g. st-marys")],
    name: Annotated[str, typer.Option("--name", help="The organisation's name")],
) -> None:
    """Create an organisation."""
    if not organization_id.strip() or len(organization_id) > 36 or not name.strip():
        typer.echo("error: an organisation needs an id of 1 to 36 characters and a name", err=True)
        raise typer.Exit(1)
    run(lambda db: provisioning.create_organization(db, organization_id.strip(), name.strip()))
    typer.echo(organization_id.strip())
