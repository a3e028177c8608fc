"""Group commit: concurrent requests' audit entries share transactions, and each caller learns
its own record (or failure) only once the transaction is over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.audit.entries import verify_chain
from medmesh.store import migrate
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from tests.audit_fixtures import entry


async def test_concurrent_requests_are_recorded_in_shared_transactions(
    database: Database,
) -> None:
    writer = AuditWriter(database, max_batch=64)
    records = await asyncio.gather(*(writer.record(entry(n)) for n in range(200)))
    await writer.aclose()
    assert sorted(r.seq for r in records) == list(range(1, 201))
    assert [r.resource_id for r in records] == [f"obs-{n}" for n in range(200)]
    # One timestamp per transaction: far fewer transactions than records, none over the cap.
    per_transaction: dict[object, int] = {}
    for record in records:
        per_transaction[record.recorded] = per_transaction.get(record.recorded, 0) + 1
    assert len(per_transaction) < 200 and max(per_transaction.values()) <= 64
    async with database.read() as conn:
        stored = await AuditLog(conn).get(records[123].id)
    assert stored == records[123]
    report = await verify_chain(database)
    assert report.intact and report.checked == 200


async def test_an_idle_writer_records_a_single_entry_at_once(database: Database) -> None:
    writer = AuditWriter(database)
    first = await writer.record(entry(1))
    second = await writer.record(entry(2))
    assert (first.seq, second.seq) == (1, 2) and second.prev_hash == first.hash


async def test_a_failed_transaction_fails_its_callers_and_the_writer_carries_on(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'not-yet-migrated.db'}")
    try:
        writer = AuditWriter(database)
        results = await asyncio.gather(
            *(writer.record(entry(n)) for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, OperationalError) for r in results)
        await migrate.upgrade(database)
        record = await writer.record(entry(9))
        assert record.seq == 1  # nothing of the failed batch was written
        assert (await verify_chain(database)).intact
    finally:
        await database.dispose()


async def test_a_caller_that_gives_up_waiting_is_still_recorded(database: Database) -> None:
    writer = AuditWriter(database)
    waiting = asyncio.create_task(writer.record(entry(5)))
    await asyncio.sleep(0)  # queued
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await writer.aclose()
    async with database.read() as conn:
        found = await AuditLog(conn).search()
    assert [r.resource_id for r in found] == ["obs-5"]
