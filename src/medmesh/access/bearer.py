"""Bearer token → Principal (interim; the OAuth work replaces this module)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.credentials import hash_secret
from medmesh.access.principals import ActorKind, Principal, Role
from medmesh.access.scopes import Scopes
from medmesh.store.schema import api_tokens
from medmesh.store.users import Users


async def principal_for_token(
    conn: AsyncConnection, token: str, *, now: datetime
) -> Principal | None:
    rows = await conn.execute(
        select(api_tokens).where(api_tokens.c.token_hash == hash_secret(token))
    )
    row = rows.mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    scopes = Scopes.parse(row["scopes"])
    if row["user_id"] is not None:
        user = await Users(conn).get(row["user_id"])
        if user is None or user.disabled:
            return None
        return Principal(
            kind=ActorKind.USER,
            id=user.id,
            name=user.display_name,
            role=Role(user.role),
            organization_id=user.organization_id,
            scopes=scopes,
            patient_id=row["patient_id"] or user.patient_id,
            token_id=row["id"],
        )
    return Principal(
        kind=ActorKind.CLIENT,
        id=row["client_id"] or row["id"],
        name=row["name"],
        role=Role(row["role"]),
        organization_id=row["organization_id"],
        scopes=scopes,
        patient_id=row["patient_id"],
        token_id=row["id"],
    )


async def principal_for_token_id(
    conn: AsyncConnection, token_id: str, *, now: datetime
) -> Principal | None:
    """The principal behind a stored token, for work done later on its behalf (webhook
    notifications of a subscription it made). Revocation and disabled accounts end it;
    expiry does not (the subscription outlives a short-lived access token)."""
    rows = await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))
    row = rows.mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    scopes = Scopes.parse(row["scopes"])
    if row["user_id"] is not None:
        user = await Users(conn).get(row["user_id"])
        if user is None or user.disabled:
            return None
        return Principal(
            kind=ActorKind.USER,
            id=user.id,
            name=user.display_name,
            role=Role(user.role),
            organization_id=user.organization_id,
            scopes=scopes,
            patient_id=row["patient_id"] or user.patient_id,
            token_id=row["id"],
        )
    return Principal(
        kind=ActorKind.CLIENT,
        id=row["client_id"] or row["id"],
        name=row["name"],
        role=Role(row["role"]),
        organization_id=row["organization_id"],
        scopes=scopes,
        patient_id=row["patient_id"],
        token_id=row["id"],
    )
