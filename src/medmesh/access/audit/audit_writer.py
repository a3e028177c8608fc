"""Group commit for audit records: many concurrent requests, one durable transaction.

Appends are serialised (one chain, one head), so one transaction per access caps a deployment
at one commit (one fsync) per audited request. `AuditWriter.record` instead queues the entry
and returns once it is durable; whatever queued while the previous batch was committing goes
into the next transaction together. An idle server adds no delay; a busy one commits batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from medmesh.domain.audit import AuditEntry, AuditRecord
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database

_Pending = tuple[AuditEntry, "asyncio.Future[AuditRecord]"]


class AuditWriter:
    """Appends entries from concurrent callers in shared write transactions (per process)."""

    def __init__(self, database: Database, *, max_batch: int = 500) -> None:
        self._database = database
        self._max_batch = max_batch
        self._pending: deque[_Pending] = deque()
        self._drain: asyncio.Task[None] | None = None

    async def record(self, entry: AuditEntry) -> AuditRecord:
        """Append `entry`; returns when its transaction has committed (raises if it failed).

        A caller cancelled while waiting does not withdraw its entry: the access happened.
        """
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_pending())
        return await future

    async def _drain_pending(self) -> None:
        while self._pending:
            count = min(self._max_batch, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                async with self._database.write() as conn:
                    records = await AuditLog(conn).append_many([entry for entry, _ in batch])
            except asyncio.CancelledError:
                for _, future in (*batch, *self._pending):
                    future.cancel()
                self._pending.clear()
                raise
            except Exception as exc:  # each waiting caller gets the failure as its own
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), record in zip(batch, records, strict=True):
                if not future.done():
                    future.set_result(record)

    async def aclose(self) -> None:
        """Wait until every queued entry is written (call on shutdown)."""
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
