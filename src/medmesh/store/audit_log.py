"""Repository for the append-only, hash-chained audit log.

Appends must run inside `Database.write()`. They are serialised so that `seq` stays gapless
and the chain linear: on PostgreSQL by a transaction-scoped advisory lock taken before the
head is read, on SQLite by the writer lock that BEGIN IMMEDIATE already holds. Should two
appenders ever race anyway, the primary key on `seq` refuses the second: the chain can fail
to grow, never fork. Triggers (migration 0004) refuse UPDATE and DELETE.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.audit import GENESIS_HASH, AuditEntry, AuditRecord, seal
from medmesh.domain.errors import NotFound
from medmesh.store.schema import audit_log

# pg_advisory_xact_lock key of audit appends: any fixed bigint no other lock uses
# (the ASCII of "mmaudit").
APPEND_LOCK_KEY = 0x6D6D6175646974


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of the chain: what an operator writes down as an anchor."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


# The columns in AuditRecord's field order: rows become records positionally, which is
# several times faster than by name and matters when verifying millions of them.
_NAMES = [f.name for f in fields(AuditRecord)]
_COLUMNS = [audit_log.c[name] for name in _NAMES]


def _records(result: Result[Any]) -> list[AuditRecord]:
    rows: Iterable[tuple[Any, ...]] = result
    return [AuditRecord(*row) for row in rows]


class AuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, entry: AuditEntry, at: datetime | None = None) -> AuditRecord:
        """Append one entry; `at` defaults to now, read once the append lock is held."""
        return (await self.append_many([entry], at))[0]

    async def append_many(
        self, entries: Sequence[AuditEntry], at: datetime | None = None
    ) -> list[AuditRecord]:
        """Append entries in order, under one lock and one INSERT."""
        if not entries:
            return []
        head = await self._locked_head()
        # Taking the time after the lock keeps `recorded` in step with `seq` (one clock).
        recorded = at if at is not None else datetime.now(UTC)
        seq, prev_hash = (0, GENESIS_HASH) if head is None else (head.seq, head.hash)
        records = []
        for entry in entries:
            seq += 1
            record = seal(seq, str(uuid.uuid4()), recorded, entry, prev_hash)
            records.append(record)
            prev_hash = record.hash
        # Not dataclasses.asdict: its deep copies cost more than hashing the records.
        rows = [{name: getattr(r, name) for name in _NAMES} for r in records]
        await self._conn.execute(audit_log.insert(), rows)
        return records

    async def _locked_head(self) -> ChainHead | None:
        if self._conn.dialect.name == "postgresql":
            await self._conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_KEY)))
        return await self.head()

    async def head(self) -> ChainHead | None:
        """The last record's seq and hash; None while the log is empty."""
        query = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        row = (await self._conn.execute(query)).first()
        return None if row is None else ChainHead(row.seq, row.hash)

    async def get(self, record_id: str) -> AuditRecord:
        query = select(*_COLUMNS).where(audit_log.c.id == record_id)
        found = _records(await self._conn.execute(query))
        if not found:
            raise NotFound("AuditEvent not found")
        return found[0]

    async def search(
        self,
        *,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Records newest first (in the order they were appended), optionally about one
        patient and recorded in [since, until)."""
        query = select(*_COLUMNS)
        if patient_id is not None:
            query = query.where(audit_log.c.patient_id == patient_id)
        if since is not None:
            query = query.where(audit_log.c.recorded >= since)
        if until is not None:
            query = query.where(audit_log.c.recorded < until)
        query = query.order_by(audit_log.c.seq.desc()).limit(count).offset(offset)
        return _records(await self._conn.execute(query))

    async def after(self, seq: int, limit: int) -> list[AuditRecord]:
        """Up to `limit` records with a seq above `seq`, in chain order."""
        query = (
            select(*_COLUMNS).where(audit_log.c.seq > seq).order_by(audit_log.c.seq).limit(limit)
        )
        return _records(await self._conn.execute(query))

    async def chunks(self, *, after: int = 0, size: int = 5000) -> AsyncIterator[list[AuditRecord]]:
        """The whole chain in order, `size` records at a time (keyset paging on seq, so a
        chunk costs the same at record 10 as at record 10 million)."""
        while chunk := await self.after(after, size):
            yield chunk
            after = chunk[-1].seq
