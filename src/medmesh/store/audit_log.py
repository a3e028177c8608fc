"""Interim stand-in: the audit work replaces this module."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.audit import AuditEntry
from medmesh.store.schema import audit_log


class AuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, entry: AuditEntry, at: datetime | None = None) -> None:
        head = (
            await self._conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            )
        ).first()
        seq, prev = (head[0] + 1, head[1]) if head else (1, "0" * 64)
        values = {k: getattr(entry, k) for k in entry.__dataclass_fields__}
        digest = hashlib.sha256((prev + repr(sorted(values.items()))).encode()).hexdigest()
        await self._conn.execute(
            audit_log.insert().values(
                seq=seq,
                id=str(uuid.uuid4()),
                recorded=at or datetime.now(UTC),
                prev_hash=prev,
                hash=digest,
                **values,
            )
        )
