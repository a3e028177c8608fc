"""Builders for audit tests: entries, a filled log, and an attacker with DBA rights."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from typer.testing import CliRunner, Result

from medmesh.access.audit.entries import AuditEntry
from medmesh.cli import app
from medmesh.domain.audit import AuditRecord
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database

T0 = datetime(2026, 11, 25, 9, 30, 0, 123456, tzinfo=UTC)


def entry(n: int = 0, patient_id: str | None = "patient-1", **changes: object) -> AuditEntry:
    """A clinician reading an Observation of `patient_id` (ids only, as in production)."""
    values: dict[str, object] = {
        "action": "R",
        "subtype": "read",
        "actor_kind": "user",
        "actor_id": f"user-{n % 3}",
        "actor_name": f"Dr Zoë Ångström {n % 3}",
        "organization_id": "default",
        "resource_type": "Observation",
        "resource_id": f"obs-{n}",
        "patient_id": patient_id,
        "purpose": "TREAT",
        "basis": "care-team",
        "source": "192.0.2.10",
    }
    values.update(changes)
    return AuditEntry(**values)  # type: ignore[arg-type]


async def fill(database: Database, count: int, start: datetime = T0) -> list[AuditRecord]:
    """`count` records, one per write transaction, a second apart from `start`."""
    records = []
    for n in range(count):
        async with database.write() as conn:
            at = start + timedelta(seconds=n)
            records.append(await AuditLog(conn).append(entry(n), at=at))
    return records


async def _guard_definitions(conn: AsyncConnection) -> tuple[list[str], list[str]]:
    """(drop statements, create statements) of the append-only triggers, read from the
    database itself, so the attacker restores exactly what was there."""
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"
            )
        )
        found = rows.all()
        return [f"DROP TRIGGER {name} ON audit_log" for name, _ in found], [d for _, d in found]
    rows = await conn.execute(
        text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
        )
    )
    found = rows.all()
    return [f"DROP TRIGGER {name}" for name, _ in found], [sql for _, sql in found]


async def tamper(database: Database, *statements: str) -> None:
    """Run SQL against audit_log as someone with DBA rights would: drop the append-only
    triggers, change history, and put the triggers back to cover their tracks."""
    async with database.write() as conn:
        drops, creates = await _guard_definitions(conn)
        assert drops, "the append-only triggers are missing"
        for statement in (*drops, *statements, *creates):
            await conn.execute(text(statement))


def verify_command(database_url: str, *options: str) -> Result:
    """`medmesh audit verify` against the real database, exactly as an operator runs it."""
    args = ["audit", "verify", "--database-url", database_url, *options]
    return CliRunner().invoke(app, args)


async def run_verify(database_url: str, *options: str) -> Result:
    # The command runs its own event loop, so it goes to a thread of its own.
    return await asyncio.to_thread(verify_command, database_url, *options)


def swap_statements(a: int, b: int) -> list[str]:
    """UPDATEs that give records #a and #b each other's contents (every column but seq),
    by moving the rows through a free seq."""
    spare = -1
    moves = [(a, spare), (b, a), (spare, b)]
    return [f"UPDATE audit_log SET seq = {new} WHERE seq = {old}" for old, new in moves]
