"""OAuth clients registered here: partners' backend services (SMART Backend Services) and
browser apps (SMART App Launch, public clients with PKCE)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, Role
from medmesh.access.oauth.app_launch import PUBLIC_CLIENT
from medmesh.access.oauth.client_keys import parse_client_jwks
from medmesh.access.policy.grants import grantable_scopes
from medmesh.access.policy.scopes import Scopes
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClients


async def register_client(
    database: Database,
    *,
    name: str,
    jwks: str,
    scopes: str,
    organization_id: str = DEFAULT_ORGANIZATION,
) -> str:
    """Register a partner's backend service (SMART Backend Services) and return its client_id.

    `jwks` is its public JWK Set (RS384/ES384 keys, each with a kid); `scopes` the system/
    scopes it may ever be granted (each token request is narrowed to them).
    """
    if not name.strip():
        raise ValueError("a client needs a name saying whose system it is")
    keys = parse_client_jwks(jwks)  # InvalidJwks says what is wrong
    ceiling = grantable_scopes(Role.SYSTEM, scopes, holder="a backend service client")
    client_id = str(uuid.uuid4())
    async with database.write() as conn:
        await OAuthClients(conn).add(
            client_id=client_id,
            organization_id=organization_id,
            name=name.strip(),
            jwks=json.dumps(keys.as_dict(private=False)),
            scopes=str(ceiling),
        )
    return client_id


async def set_client_disabled(database: Database, client_id: str, disabled: bool) -> None:
    """Disable (or re-enable) a client: its tokens stop working on the next request."""
    async with database.write() as conn:
        await OAuthClients(conn).set_disabled(client_id, disabled)


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_REDIRECT_URI = 2000


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_redirect_uri(uri: str) -> str:
    """An absolute https URI without fragment; plain http only on a loopback host (RFC 8252
    §7.3, native and development apps). ValueError says what is wrong."""
    parts = urlsplit(uri)
    if len(uri) > MAX_REDIRECT_URI or not parts.netloc or parts.fragment:
        raise ValueError(f"redirect URI {uri[:80]!r} must be absolute, without a #fragment")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError(f"redirect URI {uri[:80]!r} must use https (http only on loopback)")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"redirect URI {uri[:80]!r} must use https")
    return uri


def check_origin(origin: str) -> str:
    """scheme://host[:port], nothing more (what browsers send in Origin)."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or _origin(origin) != origin:
        raise ValueError(f"origin {origin[:80]!r} must be scheme://host[:port], no path")
    return origin


async def register_app_client(
    database: Database,
    *,
    name: str,
    redirect_uris: list[str],
    scopes: str,
    origins: list[str] | None = None,
    organization_id: str = DEFAULT_ORGANIZATION,
) -> str:
    """Register a browser app (a public SMART App Launch client, PKCE required) and return its
    client_id. `redirect_uris` are matched exactly; `origins` (default: those of the redirect
    URIs) get CORS; `scopes` are the patient/ and user/ scopes it may ever be granted."""
    if not name.strip():
        raise ValueError("an app needs a name saying what it is")
    if not redirect_uris:
        raise ValueError("an app needs at least one redirect URI")
    uris = [check_redirect_uri(uri) for uri in dict.fromkeys(redirect_uris)]
    allowed = [check_origin(o) for o in dict.fromkeys(origins or [_origin(u) for u in uris])]
    ceiling = grantable_scopes(Role.CLINICIAN, scopes, holder="a browser app")
    client_id = str(uuid.uuid4())
    async with database.write() as conn:
        await OAuthClients(conn).add(
            client_id=client_id,
            organization_id=organization_id,
            name=name.strip(),
            jwks="",
            scopes=str(Scopes(ceiling.granted)),
            kind=PUBLIC_CLIENT,
            redirect_uris=tuple(uris),
            origins=tuple(allowed),
        )
    return client_id
