"""The authentication and authorization checks of the HTTP API, kept in one place.

The full policy (consent, care teams, SMART scopes) replaces `require_reader` later; every
route that reads health data depends on it, so that change has one place to land.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request

from medmesh.access.bearer import principal_for_token
from medmesh.access.credentials import hash_secret
from medmesh.access.principals import ApiPrincipal, DevicePrincipal, Role
from medmesh.domain.errors import MedmeshError
from medmesh.store.database import Database
from medmesh.store.registry import Devices


class Unauthenticated(MedmeshError):
    """No credentials, or credentials that match nothing."""


class Forbidden(MedmeshError):
    """Valid credentials that do not allow this request."""


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def require_device(request: Request) -> DevicePrincipal:
    """The device whose secret is in the Authorization header."""
    secret_hash = hash_secret(_bearer(request))
    async with _database(request).read() as conn:
        device = await Devices(conn).find_by_secret_hash(secret_hash)
    if device is None:
        raise Unauthenticated("the device credential is not valid")
    return DevicePrincipal(device.id)


async def require_reader(request: Request) -> ApiPrincipal:
    """A person or system allowed to read health data through the API."""
    token = _bearer(request)
    async with _database(request).read() as conn:
        # Expiry, revocation and disabled accounts or clients are all decided there.
        principal = await principal_for_token(conn, token, now=datetime.now(UTC))
    if principal is None or principal.token_id is None:
        raise Unauthenticated("the API token is not valid")
    if principal.role not in {Role.SYSTEM, Role.CLINICIAN}:
        raise Forbidden("this token may not read health data")
    return ApiPrincipal(principal.token_id, principal.name, principal.role)
