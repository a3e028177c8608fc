"""OAuth clients (SMART Backend Services) registered for partners' systems."""

from __future__ import annotations

import json
import uuid

from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, Role
from medmesh.access.oauth.client_keys import parse_client_jwks
from medmesh.access.policy.grants import grantable_scopes
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
