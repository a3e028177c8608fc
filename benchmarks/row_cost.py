"""PostgreSQL's CPU for each reading medmesh stores, by how the rows go in: medmesh's own
`Observations.add_batch` as it is; the same rows the way it stored them before migration 0028
(COPY into the staging table, then `INSERT … SELECT … ON CONFLICT DO NOTHING`, with the foreign
keys to patients and devices and the separate dedupe index); each of the two changes alone;
and, as the limit, a plain COPY of the same rows into a table with the same indexes and no
foreign keys (what `side_by_side.py` calls raw COPY).

PostgreSQL's CPU is read from its backend process (/proc), so it needs the server on this
machine; the figures are CPU, not wall time, and hold whatever else the machine is doing.

Run: `.venv/bin/python benchmarks/row_cost.py` (`--rows N`, default 100,000 a way; `--batch`,
default 1,000 readings a transaction; `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from _common import (
    DEFAULT_POSTGRES_URL,
    PostgresUnreachable,
    log,
    print_machine,
    process_cpu,
    scratch_postgres,
)
from medmesh import provisioning
from medmesh.crypto.local import local_cipher
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import Observations, observation_rows

PATIENTS = 100
START = datetime(2026, 12, 1, tzinfo=UTC)
COLUMNS = "id, patient_id, device_id, message_id, code, effective, value, unit, received_at"
# What migration 0028 dropped, to put back for the ways "as before".
BEFORE_0028 = (
    "ALTER TABLE observations ADD CONSTRAINT uq_dedupe UNIQUE (device_id, message_id, effective)",
    "ALTER TABLE observations ADD CONSTRAINT fk_patient "
    "FOREIGN KEY (patient_id) REFERENCES patients (id)",
    "ALTER TABLE observations ADD CONSTRAINT fk_device "
    "FOREIGN KEY (device_id) REFERENCES devices (id)",
)
MOVE_STAGED = (
    f"WITH moved AS (DELETE FROM observations_staging RETURNING *) "
    f"INSERT INTO observations ({COLUMNS}) SELECT {COLUMNS} FROM moved "
    f"ON CONFLICT DO NOTHING RETURNING id"
)

Owner = tuple[str, str]  # (patient id, device id)
Batch = list[Reading]


def _readings(owners: Sequence[Owner], first: int, count: int) -> Batch:
    """`count` heart rates, one a minute for each owner in turn, numbered from `first`."""
    measure = measure_by_key("heart-rate")
    assert measure is not None
    found = []
    for n in range(first, first + count):
        patient_id, device_id = owners[n % len(owners)]
        at = START + timedelta(minutes=n // len(owners))
        found.append(
            Reading(
                device_id,
                f"r{n}",
                patient_id,
                measure,
                at,
                (MeasuredValue("8867-4", 60 + n % 40, "/min"),),
            )
        )
    return found


def _rows(batch: Batch) -> list[tuple[object, ...]]:
    """The batch as medmesh's rows, a random value of a sealed value's size for each."""
    sealed = {r.observation_id: uuid.uuid4().bytes * 3 for r in batch}
    return observation_rows(batch, sealed, START)


async def _backends_cpu(conn: asyncpg.Connection) -> dict[int, float] | None:
    """CPU seconds of each backend of this database (medmesh's pool and this connection)."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    cpu = {row["pid"]: process_cpu(row["pid"]) for row in pids}
    return None if any(v is None for v in cpu.values()) else cpu  # type: ignore[return-value]


async def _cpu_a_row(
    conn: asyncpg.Connection, batches: Sequence[Batch], store: Callable[[Batch], Awaitable[None]]
) -> float | None:
    """PostgreSQL's CPU, µs a row, storing `batches` one transaction each (None: the server's
    processes are not this machine's)."""
    before = await _backends_cpu(conn)
    for batch in batches:
        await store(batch)
    after = await _backends_cpu(conn)
    if before is None or after is None:
        return None
    used = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return used / sum(len(b) for b in batches) * 1e6


async def _owners(database: Database) -> list[Owner]:
    owners = []
    for k in range(PATIENTS):
        patient = await provisioning.create_patient(
            database, family="Row", given=f"Cost {k}", identifier=f"ROW-{k}"
        )
        device = await provisioning.register_device(database, display_name=f"cost {k}")
        await provisioning.assign_device(
            database, device.device_id, patient.id, START - timedelta(days=1)
        )
        owners.append((patient.id, device.device_id))
    return owners


async def run(url: str, rows: int, batch_size: int) -> None:
    async with scratch_postgres(url) as scratch:
        with tempfile.TemporaryDirectory() as keys:
            cipher = local_cipher(
                scratch, Path(keys) / "master-keys.json", Path(keys) / "patient-keys.db"
            )
            database = Database(scratch, cipher=cipher)
            try:
                await migrate.upgrade(database)
                owners = await _owners(database)
                await _measure(database, scratch, owners, rows, batch_size)
            finally:
                await database.dispose()


async def _measure(
    database: Database, url: str, owners: list[Owner], rows: int, batch_size: int
) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMPORARY TABLE observations_staging (LIKE observations) ON COMMIT DELETE ROWS"
        )
        await conn.execute("CREATE TABLE copy_target (LIKE observations INCLUDING ALL)")
        next_reading = 0

        def batches() -> list[Batch]:
            nonlocal next_reading
            made = [
                _readings(owners, next_reading + k * batch_size, batch_size)
                for k in range(rows // batch_size)
            ]
            next_reading += rows
            return made

        async def copy_straight(batch: Batch) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "observations", records=_rows(batch), columns=COLUMNS.split(", ")
                )

        async def through_staging(batch: Batch) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "observations_staging", records=_rows(batch), columns=COLUMNS.split(", ")
                )
                await conn.fetch(MOVE_STAGED)

        async def raw_copy(batch: Batch) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "copy_target", records=_rows(batch), columns=COLUMNS.split(", ")
                )

        async def add_batch(batch: Batch) -> None:
            async with database.write() as write:
                await Observations(write).add_batch(batch, START)

        limit = await _cpu_a_row(conn, batches(), raw_copy)
        if limit is None:
            log("skipped: PostgreSQL's processes are not this machine's (/proc)")
            return
        log(f"{'limit: raw COPY, same indexes, no foreign keys':<60} {limit:5.1f} µs CPU a row")
        ways = {
            "medmesh add_batch (owner locks, COPY straight in, rollups)": add_batch,
            "COPY straight in (no foreign keys, no dedupe index)": copy_straight,
            "through staging (no foreign keys, no dedupe index)": through_staging,
        }
        before_0028 = {
            "COPY straight in, foreign keys and dedupe index": copy_straight,
            "as before 0028: staging, foreign keys, dedupe index": through_staging,
        }
        for group, statements in ((ways, ()), (before_0028, BEFORE_0028)):
            for statement in statements:
                await conn.execute(statement)
            for label, way in group.items():
                cost = await _cpu_a_row(conn, batches(), way)
                assert cost is not None
                log(f"{label:<60} {cost:5.1f} µs CPU a row  ({cost / limit:.1f}× the limit)")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("MEDMESH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows stored, each way")
    parser.add_argument("--batch", type=int, default=1_000, help="rows a transaction")
    parser.add_argument("--quick", action="store_true", help="few rows, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.batch = 4_000, 1_000
    if args.rows < args.batch or args.batch < 1:
        parser.error("--rows must be at least --batch, and --batch at least 1")
    asyncio.run(print_machine(postgres_url=args.postgres_url))
    try:
        asyncio.run(run(args.postgres_url, args.rows, args.batch))
    except PostgresUnreachable as exc:
        log(f"skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
