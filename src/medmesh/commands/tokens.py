"""`medmesh token …`: API bearer tokens for accounts and services."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.access.identity.credentials import API_TOKEN_PREFIX, hash_secret
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION
from medmesh.commands._runner import run
from medmesh.domain.errors import NotFound
from medmesh.store.database import Database
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Users

token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token (mmt_…) or its id")]) -> None:
    """Revoke an API token; it stops working on the next request (dashboard sessions too)."""

    async def revoke(db: Database) -> bool:
        async with db.write() as conn:
            tokens = ApiTokens(conn)
            token_id = token
            if token.startswith(f"{API_TOKEN_PREFIX}_"):
                record = await tokens.find_by_hash(hash_secret(token))
                if record is None:
                    return False
                token_id = record.id
            return await tokens.revoke(token_id)

    if not run(revoke):
        typer.echo("error: no such active token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help='SMART scopes, space-separated, e.g. "user/*.rs"')],
    user: Annotated[
        str | None, typer.Option(help="Username of the account the token is for")
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(help="Name of an integration of the organisation (system/ scopes)"),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(min=1, help="User tokens: expire after N days (default: until revoked)"),
    ] = None,
    patient: Annotated[
        str | None,
        typer.Option(help="Clinician tokens with patient/ scopes: the launch patient's id"),
    ] = None,
    organization: Annotated[
        str | None, typer.Option(help="Service tokens: the organisation (default: default)")
    ] = None,
) -> None:
    """Issue an API bearer token for a user account (--user) or a service (--service); the
    token is shown only this once."""
    if (user is None) == (service is None):
        raise typer.BadParameter("give either --user USERNAME or --service NAME")
    if service is not None:
        if days is not None or patient is not None:
            raise typer.BadParameter("--days and --patient are for user tokens")
        if not service.strip():
            raise typer.BadParameter("--service needs a name")
        token = run(
            lambda db: provisioning.issue_service_token(
                db,
                name=service,
                organization_id=organization or DEFAULT_ORGANIZATION,
                scopes=scope,
            )
        )
        typer.echo(token)
        return
    if organization is not None:
        raise typer.BadParameter("--organization is for service tokens; a user's is their own")
    username = user or ""

    async def issue(db: Database) -> str:
        async with db.read() as conn:
            account = await Users(conn).find_by_username(username)
        if account is None:
            raise NotFound("no user account with this username")
        lifetime = timedelta(days=days) if days is not None else None
        return await provisioning.issue_user_token(
            db, user_id=account.id, scopes=scope, lifetime=lifetime, patient_id=patient
        )

    typer.echo(run(issue))
