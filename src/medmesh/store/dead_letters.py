"""Repository for dead letters: input refused, with the reason, kept for review and replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import PLATFORM_OWNER
from medmesh.store.database import cipher_of
from medmesh.store.schema import dead_letters

# Refused readings may come from a device with no patient yet, so they are sealed with the
# platform's dead-letter key (an ordinary data key, owned by no patient). Bound to the column
# only: the row id is assigned by the database on insert.
_PAYLOAD = "dead_letters.payload"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    channel: str
    device_id: str | None
    message_id: str | None
    reason: str
    detail: str
    payload: str  # as received; undecodable bytes kept as surrogate escapes


class DeadLetters:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_many(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        key = await cipher_of(self._conn).key_or_create(PLATFORM_OWNER)
        await self._conn.execute(
            dead_letters.insert(),
            [
                {
                    "received_at": d.received_at,
                    "channel": d.channel,
                    "device_id": d.device_id,
                    "message_id": d.message_id,
                    "reason": d.reason,
                    "detail": d.detail[:500],
                    "payload": key.seal(d.payload.encode("utf-8", "surrogateescape"), _PAYLOAD, ""),
                }
                for d in letters
            ],
        )

    async def for_device(self, device_id: str, limit: int = 100) -> list[DeadLetter]:
        query = (
            select(dead_letters)
            .where(dead_letters.c.device_id == device_id)
            .order_by(dead_letters.c.id)
            .limit(limit)
        )
        key = await cipher_of(self._conn).key_or_create(PLATFORM_OWNER)
        return [
            DeadLetter(
                r["received_at"],
                r["channel"],
                r["device_id"],
                r["message_id"],
                r["reason"],
                r["detail"],
                key.open(bytes(r["payload"]), _PAYLOAD, "").decode("utf-8", "surrogateescape"),
            )
            for r in (await self._conn.execute(query)).mappings()
        ]

    async def reasons_since(self, device_id: str, since: datetime) -> dict[str, int]:
        """How many of the device's messages were refused since `since`, by reason."""
        query = (
            select(dead_letters.c.reason, func.count())
            .where(dead_letters.c.device_id == device_id, dead_letters.c.received_at >= since)
            .group_by(dead_letters.c.reason)
        )
        return {reason: count for reason, count in await self._conn.execute(query)}
