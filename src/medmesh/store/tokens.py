"""Repository for API bearer tokens (stored as SHA-256 hashes only).

A token belongs to a user account (user_id), to an OAuth client (client_id, SMART Backend
Services), or to neither: a service token issued at the command line for an organisation's
own integration. It carries its SMART scopes and, for patient-facing tokens, the patient
whose record it opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from medmesh.store.schema import api_tokens

# The deployment's first organisation (made by migration 0004), as the column's default.
DEFAULT_ORGANIZATION = "default"


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    id: str
    name: str
    role: str
    revoked: bool
    user_id: str | None = None
    client_id: str | None = None
    organization_id: str = DEFAULT_ORGANIZATION
    scopes: str = ""
    patient_id: str | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def _record(row: RowMapping) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        revoked=row["revoked_at"] is not None,
        user_id=row["user_id"],
        client_id=row["client_id"],
        organization_id=row["organization_id"],
        scopes=row["scopes"],
        patient_id=row["patient_id"],
        expires_at=row["expires_at"],
    )


class ApiTokens:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        token_id: str,
        name: str,
        role: str,
        token_hash: str,
        *,
        user_id: str | None = None,
        client_id: str | None = None,
        organization_id: str = DEFAULT_ORGANIZATION,
        scopes: str = "",
        patient_id: str | None = None,
        expires_at: datetime | None = None,
        created_at: datetime | None = None,
    ) -> None:
        await self._conn.execute(
            api_tokens.insert().values(
                id=token_id,
                name=name,
                role=role,
                token_hash=token_hash,
                created_at=created_at or datetime.now(UTC),
                user_id=user_id,
                client_id=client_id,
                organization_id=organization_id,
                scopes=scopes,
                patient_id=patient_id,
                expires_at=expires_at,
            )
        )

    async def find_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        return await self._find(api_tokens.c.token_hash == token_hash)

    async def ids_for(
        self, *, user_id: str | None = None, client_id: str | None = None
    ) -> list[str]:
        """The ids of every token ever issued to this account or client."""
        if user_id is not None:
            condition = api_tokens.c.user_id == user_id
        elif client_id is not None:
            condition = api_tokens.c.client_id == client_id
        else:
            return []
        rows = await self._conn.execute(select(api_tokens.c.id).where(condition))
        return [r[0] for r in rows]

    async def get(self, token_id: str) -> ApiTokenRecord | None:
        return await self._find(api_tokens.c.id == token_id)

    async def _find(self, condition: ColumnElement[bool]) -> ApiTokenRecord | None:
        row = (await self._conn.execute(select(api_tokens).where(condition))).mappings().first()
        return None if row is None else _record(row)

    async def revoke(self, token_id: str) -> bool:
        result = await self._conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(result.rowcount)
