"""`medmesh client`: register, list, disable and enable partners' backend services (SMART
Backend Services clients authenticating with private_key_jwt)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION
from medmesh.access.oauth.smart_discovery import token_endpoint
from medmesh.commands._runner import run
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClientRecord, OAuthClients

app = typer.Typer(
    help="OAuth clients: partners' systems using SMART Backend Services.", no_args_is_help=True
)

MAX_JWKS_BYTES = 65_536


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Whose system it is, e.g. 'Northside Clinic EHR'")],
    jwks_file: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="The client's public JWK Set (JSON)"
        ),
    ],
    scope: Annotated[
        str,
        typer.Option(help='The system/ scopes it may ask for, e.g. "system/Observation.rs"'),
    ],
    organization: Annotated[
        str, typer.Option(help="The organisation the client acts for")
    ] = DEFAULT_ORGANIZATION,
) -> None:
    """Register a backend service by its public keys; prints its client_id."""
    if not name.strip():
        raise typer.BadParameter("the client needs a name")
    if jwks_file.stat().st_size > MAX_JWKS_BYTES:
        raise typer.BadParameter(f"the JWK Set file is larger than {MAX_JWKS_BYTES} bytes")
    try:
        jwks = jwks_file.read_text(encoding="utf-8")
    except UnicodeError:
        raise typer.BadParameter("the JWK Set file is not UTF-8 text") from None
    client_id = run(
        lambda db: provisioning.register_client(
            db, name=name, jwks=jwks, scopes=scope, organization_id=organization
        )
    )
    typer.echo(client_id)
    audience = token_endpoint(Settings().public_base_url)
    typer.echo(f"Its assertions name iss = sub = this client_id and aud = {audience}", err=True)


def _row(client: OAuthClientRecord) -> str:
    state = "disabled" if client.disabled else "active"
    return f"{client.id}  {state:8}  {client.organization_id}  {client.name}  [{client.scopes}]"


@app.command("list")
def list_clients() -> None:
    """List registered clients: client_id, state, organisation, name, scope ceiling."""

    async def fetch(db: Database) -> list[OAuthClientRecord]:
        async with db.read() as conn:
            return await OAuthClients(conn).list()

    clients = run(fetch)
    if not clients:
        typer.echo("no clients registered")
    for client in clients:
        typer.echo(_row(client))


@app.command("disable")
def disable(client_id: str) -> None:
    """Disable a client: no new tokens, and its tokens stop working on the next request."""
    run(lambda db: provisioning.set_client_disabled(db, client_id, True))
    typer.echo("disabled")


@app.command("enable")
def enable(client_id: str) -> None:
    """Enable a disabled client again."""
    run(lambda db: provisioning.set_client_disabled(db, client_id, False))
    typer.echo("enabled")
