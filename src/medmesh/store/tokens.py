"""Repository for API bearer tokens (stored as SHA-256 hashes only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from medmesh.store.schema import api_tokens


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    id: str
    name: str
    role: str
    revoked: bool


class ApiTokens:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, token_id: str, name: str, role: str, token_hash: str) -> None:
        await self._conn.execute(
            api_tokens.insert().values(
                id=token_id,
                name=name,
                role=role,
                token_hash=token_hash,
                created_at=datetime.now(UTC),
            )
        )

    async def find_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        return await self._find(api_tokens.c.token_hash == token_hash)

    async def get(self, token_id: str) -> ApiTokenRecord | None:
        return await self._find(api_tokens.c.id == token_id)

    async def _find(self, condition: ColumnElement[bool]) -> ApiTokenRecord | None:
        row = (await self._conn.execute(select(api_tokens).where(condition))).mappings().first()
        if row is None:
            return None
        return ApiTokenRecord(row["id"], row["name"], row["role"], row["revoked_at"] is not None)

    async def revoke(self, token_id: str) -> bool:
        result = await self._conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(result.rowcount)
