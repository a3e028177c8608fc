"""The one place a bearer token becomes a `Principal`.

A token may belong to a user account, to an OAuth client (SMART Backend Services) or to
neither (a service token issued at the command line). Who it belongs to is read afresh on every
request, so disabling an account or a client stops its tokens at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.identity.credentials import hash_secret
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.grants import ALLOWED_CONTEXTS
from medmesh.access.policy.scopes import InvalidScope, Scopes
from medmesh.store.oauth_clients import OAuthClients
from medmesh.store.tokens import ApiTokenRecord, ApiTokens
from medmesh.store.users import Users


async def principal_for_token(
    conn: AsyncConnection, token: str, *, now: datetime
) -> Principal | None:
    """Who presents `token`, with what it allows; None for a token that is unknown, revoked,
    expired, or whose account or client is disabled or gone."""
    if not token.strip():
        return None
    record = await ApiTokens(conn).find_by_hash(hash_secret(token.strip()))
    if record is None or record.revoked or record.expired(now):
        return None
    try:
        scopes = Scopes.parse(record.scopes)
    except InvalidScope:
        return None  # stored by an older release in a form no longer understood: refuse
    if record.user_id is not None:
        return await _user_principal(conn, record, scopes)
    if record.client_id is not None:
        return await _client_principal(conn, record, scopes)
    return _service_principal(record, scopes)


async def principal_for_token_id(conn: AsyncConnection, token_id: str) -> Principal | None:
    """The principal behind a stored token, for work done later on its behalf (the webhook
    notifications of a subscription it made). Revocation and disabled accounts or clients end
    it; expiry does not (a subscription outlives a 5-minute client token)."""
    record = await ApiTokens(conn).get(token_id)
    if record is None or record.revoked:
        return None
    try:
        scopes = Scopes.parse(record.scopes)
    except InvalidScope:
        return None
    if record.user_id is not None:
        return await _user_principal(conn, record, scopes)
    if record.client_id is not None:
        return await _client_principal(conn, record, scopes)
    return _service_principal(record, scopes)


async def _user_principal(
    conn: AsyncConnection, record: ApiTokenRecord, scopes: Scopes
) -> Principal | None:
    assert record.user_id is not None
    user = await Users(conn).get(record.user_id)
    if user is None or user.disabled:
        return None
    if record.client_id is not None:  # issued to a SMART app: the app must still be enabled
        client = await OAuthClients(conn).get(record.client_id)
        if client is None or client.disabled:
            return None
    role = Role(user.role)
    if any(scope.context not in ALLOWED_CONTEXTS[role] for scope in scopes.granted):
        return None  # the account's role changed since the token was issued
    # A patient account only ever opens its own record, whatever the token row says.
    patient_id = user.patient_id if role is Role.PATIENT else record.patient_id
    return Principal(
        kind=ActorKind.USER,
        id=user.id,
        name=user.display_name,
        role=role,
        organization_id=user.organization_id,
        scopes=scopes,
        patient_id=patient_id,
        token_id=record.id,
    )


async def _client_principal(
    conn: AsyncConnection, record: ApiTokenRecord, scopes: Scopes
) -> Principal | None:
    assert record.client_id is not None
    client = await OAuthClients(conn).get(record.client_id)
    if client is None or client.disabled:
        return None
    return Principal(
        kind=ActorKind.CLIENT,
        id=client.id,
        name=client.name,
        role=Role.SYSTEM,
        organization_id=client.organization_id,
        scopes=scopes,
        token_id=record.id,
    )


def _service_principal(record: ApiTokenRecord, scopes: Scopes) -> Principal | None:
    try:
        role = Role(record.role)
    except ValueError:
        return None
    # An organisation's own integration: identified by its token, as it has no account.
    return Principal(
        kind=ActorKind.CLIENT,
        id=record.id,
        name=record.name,
        role=role,
        organization_id=record.organization_id,
        scopes=scopes,
        patient_id=record.patient_id,
        token_id=record.id,
    )
