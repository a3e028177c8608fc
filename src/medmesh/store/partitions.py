"""Monthly range partitions of `observations` on PostgreSQL (docs/scaling.md), made ahead of
time by medmesh itself: at start and every few hours (`PartitionMaintainer`), a few months
ahead, plus one for any month whose readings landed in the default partition, so nothing is
ever refused and the default stays (nearly) empty. SQLite keeps one plain table.

DDL names and bounds are built here from calendar months, never from input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, column, delete, func, insert, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ColumnClause

from medmesh.store.database import Database
from medmesh.store.types import UTCDateTime

log = logging.getLogger(__name__)

PARENT = "observations"
DEFAULT = "observations_default"
MONTHS_AHEAD = 3  # this month and the next three exist at any time
CHECK_EVERY_SECONDS = 6 * 3600
RETRY_SECONDS = 60.0  # after a failed round
# Taken for the whole transaction, so two processes never create the same partition at once.
_LOCK_ID = 0x6D6D_7061  # "mmpa"
# How long a round waits for the table lock before giving up until the next round.
LOCK_TIMEOUT = "3s"


_FIELDS = (
    "id",
    "patient_id",
    "device_id",
    "message_id",
    "code",
    "effective",
    "value",
    "unit",
    "received_at",
)


def _columns() -> list[ColumnClause[Any]]:
    return [column(f, UTCDateTime) if f == "effective" else column(f) for f in _FIELDS]


_DEFAULT_TABLE = table(DEFAULT, *_columns())


def month_start(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_p{month.year:04d}_{month.month:02d}"


async def is_partitioned(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    query = text(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
    )
    return (await conn.execute(query, {"name": PARENT})).first() is not None


async def existing_partitions(conn: AsyncConnection) -> set[str]:
    query = text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:parent AS regclass)"
    )
    return set((await conn.execute(query, {"parent": PARENT})).scalars())


async def ensure_partitions(
    conn: AsyncConnection, now: datetime, *, since: datetime | None = None
) -> list[str]:
    """Create the monthly partitions from `since` (default: this month) to MONTHS_AHEAD ahead,
    and one for each month with readings in the default partition (moved into it). Returns
    the partitions created. Does nothing on SQLite or on an unpartitioned table.

    When something is to be created, the table is locked first (`LOCK_TIMEOUT`): creating a
    partition scans the default one, and moving its readings must see every row written to
    it, so writers wait for this transaction. Without the lock, a reading of a moved month
    committed between the move and the attach made the attach fail. The parent is locked
    before its partitions, the order writers take theirs in, so the two never deadlock; a
    long reader makes this round give up (`LockNotAvailable`) rather than stall ingest."""
    if not await is_partitioned(conn):
        return []
    await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    have = await existing_partitions(conn)
    if not await _missing_months(conn, now, since, have):
        return []
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    await conn.execute(text(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE"))
    created = []
    for month in await _missing_months(conn, now, since, have):  # again, now nobody writes
        name = partition_name(month)
        await _create(conn, name, month, add_months(month, 1), DEFAULT in have)
        created.append(name)
    log.info("created %d observation partitions", len(created))
    return created


async def _missing_months(
    conn: AsyncConnection, now: datetime, since: datetime | None, have: set[str]
) -> list[datetime]:
    """The months from `since` to MONTHS_AHEAD ahead, and those with readings waiting in the
    default partition, that have no partition yet, oldest first."""
    first = month_start(since or now)
    months = {add_months(first, n) for n in range(_months_between(first, now) + MONTHS_AHEAD + 1)}
    if DEFAULT in have:
        month_of = func.date_trunc("month", _DEFAULT_TABLE.c.effective, "UTC")
        stray = select(month_of).distinct()
        months |= {month_start(m.astimezone(UTC)) for m in (await conn.execute(stray)).scalars()}
    return sorted(m for m in months if partition_name(m) not in have)


def _months_between(first: datetime, now: datetime) -> int:
    return max((now.year - first.year) * 12 + now.month - first.month, 0)


async def _create(
    conn: AsyncConnection, name: str, start: datetime, end: datetime, has_default: bool
) -> None:
    bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    waiting = _DEFAULT_TABLE.c.effective
    in_range = and_(waiting >= start, waiting < end)
    moving = has_default and (await conn.execute(select(waiting).where(in_range).limit(1))).first()
    if not moving:
        await conn.execute(text(f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES {bounds}"))
        return
    # Readings of this month wait in the default partition: they move into the new one, which
    # is attached after (a partition cannot be created over rows the default holds).
    await conn.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    moved = delete(_DEFAULT_TABLE).where(in_range).returning(*_DEFAULT_TABLE.c).cte("moved")
    target = table(name, *_columns())
    await conn.execute(insert(target).from_select(list(_FIELDS), select(*moved.c)))
    await conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES {bounds}"))


def _now() -> datetime:
    return datetime.now(UTC)


class PartitionMaintainer:
    """Keeps the partitions ahead: once at start (before any input is taken) and every
    `interval` seconds. A failed round is logged (type only) and retried `retry` seconds later:
    a reading meanwhile lands in the default partition and moves at the next round, so a
    failure never stops the process from starting."""

    def __init__(
        self,
        database: Database,
        interval: float = CHECK_EVERY_SECONDS,
        clock: Callable[[], datetime] = _now,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self._database = database
        self._interval = interval
        self._retry = retry
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> list[str]:
        async with self._database.write() as conn:
            return await ensure_partitions(conn, self._clock())

    async def start(self) -> None:
        if self._database.backend != "postgresql":
            return
        done = await self._round()
        self._task = asyncio.create_task(self._run(done), name="medmesh-partitions")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _round(self) -> bool:
        try:
            await self.run_once()
        except Exception as exc:
            log.warning("creating observation partitions failed: %s", type(exc).__name__)
            return False
        return True

    async def _run(self, done: bool) -> None:
        while True:
            await asyncio.sleep(self._interval if done else min(self._retry, self._interval))
            done = await self._round()
