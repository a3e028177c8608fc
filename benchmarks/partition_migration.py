"""What migration 0021 (observations partitioned by month, PostgreSQL) costs on a table that
already holds readings: `--rows` observation rows over `--days` days are written with COPY into
a database at revision 0020, then the upgrade to 0021 is timed (the table is copied into the
partitions and its indexes rebuilt, while ingest would wait). The limit beside it, in the same
run: a plain `CREATE TABLE … AS SELECT` copy of the same rows (no partitions, no indexes).

Run: `.venv/bin/python benchmarks/partition_migration.py` (`--help` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

from medmesh import provisioning
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import patient_identifiers

POSTGRES_URL = os.environ.get(
    "MEDMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


COLUMNS = [
    "id",
    "patient_id",
    "device_id",
    "message_id",
    "code",
    "effective",
    "value",
    "unit",
    "received_at",
]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


async def run(rows: int, days: int) -> None:
    name = f"medmesh_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    database = Database(url)
    try:
        await migrate.upgrade(database, "0020")
        # Today's provisioning also reads a later migration's table (a patient's other
        # identifiers, 0024): lent for the set-up and dropped before the measured upgrade.
        async with database.write() as conn:
            await conn.run_sync(patient_identifiers.create)
        patient = await provisioning.create_patient(
            database, family="Bench", given="Migration", identifier="PM-1"
        )
        async with database.write() as conn:
            await conn.run_sync(patient_identifiers.drop)
        device = await provisioning.register_device(database, display_name="M", model="M-1")
        now = datetime.now(UTC)
        step = timedelta(days=days) / rows
        records = [
            (
                str(uuid.uuid4()),
                patient.id,
                device.device_id,
                f"m-{n}",
                "8867-4",
                now - step * n,
                os.urandom(37),  # a sealed float's size
                "/min",
                now,
            )
            for n in range(rows)
        ]
        conn = await asyncpg.connect(_dsn(url))
        try:
            await conn.copy_records_to_table("observations", records=records, columns=COLUMNS)
            await conn.execute("ANALYZE observations")
            size = await conn.fetchval("SELECT pg_total_relation_size('observations')")
            began = time.perf_counter()
            await conn.execute("CREATE TABLE plain_copy AS SELECT * FROM observations")
            plain = time.perf_counter() - began
            await conn.execute("DROP TABLE plain_copy")
        finally:
            await conn.close()
        began = time.perf_counter()
        await migrate.upgrade(database)
        took = time.perf_counter() - began
        print(f"partition migration (0021) on PostgreSQL: {rows:,} rows over {days} days")
        print(f"  table with indexes before                 {size / 2**20:,.0f} MiB")
        print(
            f"  limit: CREATE TABLE AS SELECT, no index {plain:.1f} s ({rows / plain:,.0f} rows/s)"
        )
        print(
            f"  upgrade 0020 -> 0021                     {took:.1f} s ({rows / took:,.0f} rows/s)"
        )
    finally:
        await database.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--quick", action="store_true", help="10,000 rows: a smoke run")
    options = parser.parse_args()
    if options.quick:
        options.rows = 10_000
    asyncio.run(run(options.rows, options.days))
