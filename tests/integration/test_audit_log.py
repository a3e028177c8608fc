"""The hash-chained audit log on both backends: appends, concurrency, the append-only guard,
and tampering detected by `medmesh audit verify`."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from medmesh.access.audit.entries import BreakKind, parse_anchor, verify_chain
from medmesh.cli import app
from medmesh.domain.audit import GENESIS_HASH, chain_hash, record_fields
from medmesh.domain.errors import NotFound
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from tests.audit_fixtures import T0, entry, fill, run_verify, swap_statements, tamper


async def test_appended_records_form_a_gapless_chain_from_genesis(database: Database) -> None:
    records = await fill(database, 5)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    report = await verify_chain(database)
    assert report.intact and report.checked == 5
    assert report.head is not None and (report.head.seq, report.head.hash) == (5, records[-1].hash)


async def test_stored_records_read_back_exactly_as_hashed(database: Database) -> None:
    # Non-ASCII names, a non-UTC offset and microseconds must survive both backends unchanged,
    # or every hash would fail to verify.
    at = datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    async with database.write() as conn:
        written = await AuditLog(conn).append(entry(actor_name="Dr 李 Ørsted-Núñez"), at=at)
    async with database.read() as conn:
        stored = await AuditLog(conn).get(written.id)
    assert stored == written
    assert stored.recorded == at and stored.recorded.tzinfo == UTC
    assert (await verify_chain(database)).intact


async def test_append_many_continues_the_chain_in_order(database: Database) -> None:
    await fill(database, 2)
    async with database.write() as conn:
        batch = await AuditLog(conn).append_many([entry(n) for n in range(10)])
        assert await AuditLog(conn).append_many([]) == []
    assert [r.seq for r in batch] == list(range(3, 13))
    assert [r.resource_id for r in batch] == [f"obs-{n}" for n in range(10)]
    report = await verify_chain(database, chunk_size=4)  # chunks end mid-batch
    assert report.intact and report.checked == 12


async def test_concurrent_appenders_leave_one_gapless_valid_chain(database: Database) -> None:
    async def append_one(n: int) -> int:
        async with database.write() as conn:
            return (await AuditLog(conn).append(entry(n))).seq

    seqs = await asyncio.gather(*(append_one(n) for n in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    report = await verify_chain(database)
    assert report.intact and report.checked == 50


async def test_appenders_in_separate_processes_share_one_chain(
    database: Database, database_url: str
) -> None:
    # Another Database object has its own pool (and on SQLite its own writer connection),
    # as a second server process would.
    other = Database(database_url)
    try:

        async def append_via(db: Database, n: int) -> None:
            async with db.write() as conn:
                await AuditLog(conn).append(entry(n))

        await asyncio.gather(*(append_via(database if n % 2 else other, n) for n in range(30)))
    finally:
        await other.dispose()
    report = await verify_chain(database)
    assert report.intact and report.checked == 30


async def test_the_database_refuses_to_update_or_delete_audit_records(database: Database) -> None:
    await fill(database, 3)
    for statement in (
        "UPDATE audit_log SET actor_name = 'nobody' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 3",
    ):
        with pytest.raises(IntegrityError, match="audit_log is append-only"):
            async with database.write() as conn:
                await conn.execute(text(statement))
    async with database.read() as conn:
        assert (await AuditLog(conn).head()) is not None
        assert len(await AuditLog(conn).search()) == 3
    assert (await verify_chain(database)).intact


async def test_verify_reports_an_intact_chain_and_exits_zero(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 4)
    result = await run_verify(database_url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"audit chain intact: 4 records, head #4 {records[-1].hash}"


async def test_verify_names_a_record_whose_contents_were_altered(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 6)
    await tamper(database, "UPDATE audit_log SET actor_id = 'someone-else' WHERE seq = 3")
    result = await run_verify(database_url)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"audit chain broken at record #3 ({records[2].id}): its hash does not match its contents"
    )


async def test_verify_catches_an_altered_record_whose_hash_was_recomputed(
    database: Database, database_url: str
) -> None:
    # A careful attacker rewrites record 3 and gives it a valid hash for its new contents:
    # record 4 no longer links to it.
    records = await fill(database, 6)
    forged = dataclasses.replace(records[2], actor_id="someone-else")
    new_hash = chain_hash(forged.prev_hash, record_fields(forged))
    await tamper(
        database,
        f"UPDATE audit_log SET actor_id = 'someone-else', hash = '{new_hash}' WHERE seq = 3",
    )
    result = await run_verify(database_url)
    assert result.exit_code == 1
    assert result.output.startswith(f"audit chain broken at record #4 ({records[3].id}): ")
    assert "prev_hash is not the hash of record #3" in result.output


async def test_verify_names_the_gap_left_by_deleted_records(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 8)
    await tamper(database, "DELETE FROM audit_log WHERE seq IN (4, 5)")
    result = await run_verify(database_url)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"audit chain broken at record #6 ({records[5].id}): records #4..#5 are missing (deleted)"
    )


async def test_verify_notices_when_the_first_records_are_deleted(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 3)
    await tamper(database, "DELETE FROM audit_log WHERE seq = 1")
    result = await run_verify(database_url)
    assert result.exit_code == 1
    assert f"record #2 ({records[1].id}): the chain starts here: records #1 are missing" in (
        result.output
    )


async def test_deleting_the_last_record_is_caught_only_with_an_anchor(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 5)
    async with database.read() as conn:
        head = await AuditLog(conn).head()
    anchor = str(head)
    assert anchor == f"5:{records[-1].hash}"
    await tamper(database, "DELETE FROM audit_log WHERE seq = 5")

    without = await run_verify(database_url)
    assert without.exit_code == 0  # what remains is a valid chain: why anchors exist
    assert without.output.startswith("audit chain intact: 4 records, head #4 ")

    with_anchor = await run_verify(database_url, "--anchor", anchor)
    assert with_anchor.exit_code == 1
    assert with_anchor.output.strip() == (
        "audit chain broken at record #5: the chain ends at #4: "
        "the anchored record and any after it were removed"
    )


async def test_an_anchor_detects_a_chain_rewritten_with_valid_hashes(
    database: Database, database_url: str
) -> None:
    await fill(database, 4)
    async with database.read() as conn:
        anchor = str(await AuditLog(conn).head())
    # Someone with write access empties the log and builds a new, internally valid history.
    await tamper(database, "DELETE FROM audit_log")
    rewritten = await fill(database, 6, start=T0 + timedelta(days=1))
    assert (await run_verify(database_url)).exit_code == 0

    result = await run_verify(database_url, "--anchor", anchor)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"audit chain broken at record #4 ({rewritten[3].id}): its hash differs from the "
        "anchor: the chain was rewritten from here or earlier"
    )
    matching = await run_verify(database_url, "--anchor", f"6:{rewritten[-1].hash}")
    assert matching.exit_code == 0 and "(anchor #6 matches)" in matching.output


async def test_verify_names_the_first_of_two_swapped_records(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 7)
    await tamper(database, *swap_statements(3, 6))
    result = await run_verify(database_url)
    assert result.exit_code == 1
    # Record #3 now holds what was #6 (its id): its contents no longer hash with seq 3.
    assert result.output.strip() == (
        f"audit chain broken at record #3 ({records[5].id}): its hash does not match its contents"
    )


async def test_verify_stops_at_the_first_break_of_several(
    database: Database, database_url: str
) -> None:
    records = await fill(database, 9)
    await tamper(
        database,
        "DELETE FROM audit_log WHERE seq = 8",
        "UPDATE audit_log SET purpose = 'HMARKT' WHERE seq = 5",
    )
    report = await verify_chain(database)
    assert report.broken is not None
    assert (report.broken.kind, report.broken.seq) == (BreakKind.ALTERED, 5)
    assert report.checked == 4 and report.head is not None and report.head.seq == 4
    assert report.broken.record_id == records[4].id


def test_verify_runs_as_a_separate_process_with_settings_from_the_environment(
    database_url: str,
) -> None:
    # The real entry point, configured the way operators configure medmesh.
    asyncio.run(_fill_and_alter(database_url))
    env = {**os.environ, "MEDMESH_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "medmesh", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("audit chain broken at record #2 (")
    assert done.stdout.rstrip().endswith("its hash does not match its contents")


async def _fill_and_alter(url: str) -> None:
    database = Database(url)
    try:
        await fill(database, 3)
        await tamper(database, "UPDATE audit_log SET outcome = '4' WHERE seq = 2")
    finally:
        await database.dispose()


async def test_verify_refuses_a_malformed_anchor(database_url: str) -> None:
    for bad in ("12", "0:" + "a" * 64, "5:" + "g" * 64, "5:abc"):
        result = await run_verify(database_url, "--anchor", bad)
        assert result.exit_code == 2
        assert "the anchor must be SEQ:HASH" in result.output


def test_verify_explains_a_database_it_cannot_read(tmp_path: object) -> None:
    result = CliRunner().invoke(
        app, ["audit", "verify", "--database-url", f"sqlite:///{tmp_path}/never-migrated.db"]
    )
    assert result.exit_code == 2
    assert "cannot read the audit log" in result.output
    assert "medmesh db upgrade" in result.output


async def test_head_prints_an_anchor_that_verify_accepts(
    database: Database, database_url: str
) -> None:
    runner = CliRunner()
    empty = await asyncio.to_thread(
        runner.invoke, app, ["audit", "head", "--database-url", database_url]
    )
    assert empty.exit_code == 1 and "empty" in empty.output
    records = await fill(database, 3)
    printed = await asyncio.to_thread(
        runner.invoke, app, ["audit", "head", "--database-url", database_url]
    )
    assert printed.exit_code == 0
    assert printed.output.strip() == f"3:{records[-1].hash}"
    assert parse_anchor(printed.output).seq == 3
    assert (await run_verify(database_url, "--anchor", printed.output.strip())).exit_code == 0


async def test_search_lists_a_patients_records_newest_first_with_paging(
    database: Database,
) -> None:
    await fill(database, 6)  # patient-1, one a second from T0
    async with database.write() as conn:
        await AuditLog(conn).append(entry(99, patient_id="patient-2"), at=T0)
        await AuditLog(conn).append(entry(100, patient_id=None, subtype="search"), at=T0)
    async with database.read() as conn:
        log = AuditLog(conn)
        mine = await log.search(patient_id="patient-1")
        assert [r.resource_id for r in mine] == [f"obs-{n}" for n in (5, 4, 3, 2, 1, 0)]
        window = await log.search(
            patient_id="patient-1", since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4)
        )
        assert [r.resource_id for r in window] == ["obs-3", "obs-2"]
        page = await log.search(patient_id="patient-1", count=2, offset=2)
        assert [r.resource_id for r in page] == ["obs-3", "obs-2"]
        assert [r.seq for r in await log.search(count=3)] == [8, 7, 6]
        with pytest.raises(NotFound):
            await log.get("no-such-record")


async def test_a_failed_transaction_leaves_no_record_and_no_gap(database: Database) -> None:
    await fill(database, 2)
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await AuditLog(conn).append(entry(7))
            raise RuntimeError("the access it recorded failed to commit")
    await fill(database, 1, start=T0 + timedelta(minutes=5))
    report = await verify_chain(database)
    assert report.intact and report.checked == 3
