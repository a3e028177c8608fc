"""Repositories for OAuth clients (SMART Backend Services) and the client assertions they used.

A client is a partner's system: it authenticates with a JWT signed by a private key whose
public half (a JWK Set) was registered here. Each assertion's `jti` is kept until the assertion
expires, so a replayed assertion is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import NotFound
from medmesh.store._sql import insert_ignoring_duplicates
from medmesh.store.schema import oauth_assertions, oauth_clients, organizations


@dataclass(frozen=True, slots=True)
class OAuthClientRecord:
    id: str  # the client_id
    organization_id: str
    name: str
    jwks: str  # the registered public JWK Set, as JSON
    scopes: str  # the ceiling: the most it may ask for, space-separated
    created_at: datetime
    disabled: bool
    kind: str = "backend"  # backend, or public (a browser app: SMART App Launch)
    redirect_uris: tuple[str, ...] = field(default=())
    origins: tuple[str, ...] = field(default=())


def _strings(text: str) -> tuple[str, ...]:
    found = json.loads(text or "[]")
    return tuple(str(item) for item in found) if isinstance(found, list) else ()


def _client(row: RowMapping) -> OAuthClientRecord:
    return OAuthClientRecord(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        jwks=row["jwks"],
        scopes=row["scopes"],
        created_at=row["created_at"],
        disabled=bool(row["disabled"]),
        kind=row["kind"],
        redirect_uris=_strings(row["redirect_uris"]),
        origins=_strings(row["origins"]),
    )


class OAuthClients:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        *,
        client_id: str,
        organization_id: str,
        name: str,
        jwks: str,
        scopes: str,
        kind: str = "backend",
        redirect_uris: tuple[str, ...] = (),
        origins: tuple[str, ...] = (),
    ) -> None:
        found = await self._conn.execute(
            select(organizations.c.id).where(organizations.c.id == organization_id)
        )
        if found.first() is None:
            raise NotFound("no organisation with this id")
        await self._conn.execute(
            oauth_clients.insert().values(
                id=client_id,
                organization_id=organization_id,
                name=name,
                jwks=jwks,
                scopes=scopes,
                created_at=datetime.now(UTC),
                kind=kind,
                redirect_uris=json.dumps(list(redirect_uris)),
                origins=json.dumps(list(origins)),
            )
        )

    async def origin_registered(self, origin: str) -> bool:
        """Whether an enabled app client registered this origin (scheme://host[:port])."""
        query = select(oauth_clients.c.origins).where(
            oauth_clients.c.disabled.is_(False),
            oauth_clients.c.kind != "backend",
            oauth_clients.c.origins.contains(json.dumps(origin), autoescape=True),
        )
        rows = (await self._conn.execute(query)).scalars().all()
        return any(origin in _strings(text) for text in rows)

    async def get(self, client_id: str) -> OAuthClientRecord | None:
        query = select(oauth_clients).where(oauth_clients.c.id == client_id)
        found = (await self._conn.execute(query)).mappings().first()
        return None if found is None else _client(found)

    async def list(self) -> list[OAuthClientRecord]:
        rows = await self._conn.execute(
            select(oauth_clients).order_by(oauth_clients.c.created_at, oauth_clients.c.id)
        )
        return [_client(row) for row in rows.mappings()]

    async def set_disabled(self, client_id: str, disabled: bool) -> None:
        result = await self._conn.execute(
            update(oauth_clients).where(oauth_clients.c.id == client_id).values(disabled=disabled)
        )
        if not result.rowcount:
            raise NotFound("no OAuth client with this id")


class ClientAssertions:
    """The `jti`s of client assertions already used, kept until each assertion expires."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def use(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record an assertion as used; False if this client used this `jti` before.

        The insert itself decides (primary key, ON CONFLICT DO NOTHING), so two requests racing
        with one assertion cannot both succeed."""
        result = await self._conn.execute(
            insert_ignoring_duplicates(self._conn, oauth_assertions).values(
                client_id=client_id, jti=jti, expires_at=expires_at
            )
        )
        return bool(result.rowcount)

    async def forget_expired(self, now: datetime) -> int:
        """Drop assertions that have expired: they would be refused anyway."""
        result = await self._conn.execute(
            delete(oauth_assertions).where(oauth_assertions.c.expires_at < now)
        )
        return int(result.rowcount or 0)
