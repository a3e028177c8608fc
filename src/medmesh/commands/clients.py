"""`medmesh client`: register, list, disable and enable OAuth clients: partners' backend
services (SMART Backend Services, private_key_jwt) and browser apps (SMART App Launch, public
clients with PKCE, their redirect URIs and origins)."""

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
    help="OAuth clients: backend services (SMART Backend Services) and browser apps (SMART App "
    "Launch).",
    no_args_is_help=True,
)

MAX_JWKS_BYTES = 65_536


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Whose system it is, e.g. 'Northside Clinic EHR'")],
    scope: Annotated[
        str,
        typer.Option(
            help='What it may ask for: system/ scopes for a backend service ("system/'
            'Observation.rs"), patient/ and user/ scopes for an app ("patient/*.rs user/*.rs")'
        ),
    ],
    jwks_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A backend service's public JWK Set (JSON)",
        ),
    ] = None,
    public: Annotated[
        bool,
        typer.Option(
            "--public",
            help="A browser app without a secret (SMART App Launch, PKCE); needs --redirect-uri",
        ),
    ] = False,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(help="An app's redirect URI, matched exactly (repeat for several)"),
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option(help="An origin allowed CORS (repeat); default: those of the redirect URIs"),
    ] = None,
    organization: Annotated[
        str, typer.Option(help="The organisation the client acts for")
    ] = DEFAULT_ORGANIZATION,
) -> None:
    """Register a backend service by its public keys, or a browser app (--public) by its
    redirect URIs; prints its client_id."""
    if not name.strip():
        raise typer.BadParameter("the client needs a name")
    if public:
        if jwks_file is not None:
            raise typer.BadParameter("a public app has no keys: leave out --jwks-file")
        if not redirect_uri:
            raise typer.BadParameter("a public app needs at least one --redirect-uri")
        _register_app(name, scope, redirect_uri, origin or [], organization)
        return
    if jwks_file is None:
        raise typer.BadParameter(
            "give --jwks-file for a backend service, or --public with --redirect-uri for an app "
            "(confidential apps with a client secret are not supported)"
        )
    if redirect_uri or origin:
        raise typer.BadParameter("--redirect-uri and --origin are for --public apps")
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


def _register_app(
    name: str, scope: str, redirect_uris: list[str], origins: list[str], organization: str
) -> None:
    try:
        client_id = run(
            lambda db: provisioning.register_app_client(
                db,
                name=name,
                redirect_uris=redirect_uris,
                scopes=scope,
                origins=origins or None,
                organization_id=organization,
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(client_id)
    base = Settings().public_base_url.rstrip("/")
    typer.echo(
        f"Launch it with iss (aud) = {base}/fhir; discovery at "
        f"{base}/fhir/.well-known/smart-configuration",
        err=True,
    )


def _row(client: OAuthClientRecord) -> str:
    state = "disabled" if client.disabled else "active"
    row = f"{client.id}  {state:8}  {client.kind:7}  {client.organization_id}  {client.name}"
    redirects = f"  -> {' '.join(client.redirect_uris)}" if client.redirect_uris else ""
    return f"{row}  [{client.scopes}]{redirects}"


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
