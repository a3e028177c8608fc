"""The cost of encryption at rest, in-process, on SQLite and PostgreSQL.

For each backend: one patient's month of one-per-minute heart rate (43 200 readings) is stored
through the repository in batches of 100 (as ingest does), then read back as a 24-hour
Observation search (1440 rows) and as a month chart (Vitals.buckets, 200 buckets: the values are
decrypted and bucketed in Python since the database cannot aggregate ciphertext). Each figure is
printed with the part spent in AES-256-GCM alone (the same number of seals or opens, timed on
their own), so the cost of encryption is the difference it makes. Also: unwrapping a data key
(a key-cache miss) and a name search over 1000 patients with cold and warm key caches.

Run: `.venv/bin/python benchmarks/encryption.py` (`--quick` for fewer readings, `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from _common import admin_dsn, load_average, postgres_version
from medmesh import provisioning
from medmesh.crypto.local import local_cipher
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import VALUE, ObservationQuery, Observations, TimeBound
from medmesh.store.registry import Patients
from medmesh.store.vitals import Vitals

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 10, 1, tzinfo=UTC)
BATCH = 100


def line(label: str, value: str) -> None:
    print(f"  {label:<52} {value}")


async def best_of(times: int, call: Callable[[], Awaitable[object]]) -> float:
    """The median of `times` runs, in seconds."""
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


async def run(url: str, keys_dir: Path, days: int, patients: int) -> None:
    database = Database(
        url,
        cipher=local_cipher(url, keys_dir / "master-keys.json", keys_dir / "patient-keys.db"),
    )
    try:
        await migrate.upgrade(database)
        await _measure(database, days, patients)
    finally:
        await database.dispose()


async def _measure(database: Database, days: int, patients: int) -> None:
    world_patient = await provisioning.create_patient(
        database, family="Bench", given="Mark", identifier="BENCH-0"
    )
    device = await provisioning.register_device(database, display_name="Monitor")
    await provisioning.assign_device(database, device.device_id, world_patient.id, START)
    measure = measure_by_key("heart-rate")
    assert measure is not None
    minutes = days * 1440
    readings = [
        Reading(
            device_id=device.device_id,
            message_id=f"m-{m}",
            patient_id=world_patient.id,
            measure=measure,
            effective=START + timedelta(minutes=m),
            values=(MeasuredValue("8867-4", float(60 + m % 40), "/min"),),
        )
        for m in range(minutes)
    ]

    began = time.perf_counter()
    for start in range(0, len(readings), BATCH):
        async with database.write() as conn:
            await Observations(conn).add_batch(readings[start : start + BATCH], START)
    stored = time.perf_counter() - began
    key = await database.cipher.key(world_patient.id)
    began = time.perf_counter()
    sealed = [key.seal_float(r.values[0].value, VALUE, r.observation_id) for r in readings]
    sealing = time.perf_counter() - began
    line(
        f"ingest {minutes} readings, batches of {BATCH}",
        f"{minutes / stored:,.0f} readings/s; AES-GCM seal alone {sealing * 1e6 / minutes:.1f} µs"
        f"/reading = {100 * sealing / stored:.1f} % of ingest time",
    )

    day = START + timedelta(days=days // 2)
    query = ObservationQuery(
        patient_id=world_patient.id,
        codes=("8867-4",),
        bounds=(TimeBound("ge", day), TimeBound("lt", day + timedelta(days=1))),
        limit=1440,
    )

    async def search() -> None:
        async with database.read() as conn:
            found = await Observations(conn).search(query)
        assert len(found) == 1440

    searching = await best_of(7, search)
    began = time.perf_counter()
    for blob, reading in zip(sealed[:1440], readings[:1440], strict=True):
        key.open_float(blob, VALUE, reading.observation_id)
    opening = time.perf_counter() - began
    line(
        "24-hour search (1440 rows), median of 7",
        f"{searching * 1000:.1f} ms; AES-GCM open alone {opening * 1000:.2f} ms "
        f"({100 * opening / searching:.1f} %)",
    )

    width = minutes * 60 / 200

    async def chart() -> None:
        async with database.read() as conn:
            buckets = await Vitals(conn).buckets(
                world_patient.id, "8867-4", origin=START, width=width
            )
        assert sum(b.count for _, b in buckets) == minutes - 1

    charting = await best_of(3, chart)
    pairs = [(r.observation_id, blob) for r, blob in zip(readings, sealed, strict=True)]
    began = time.perf_counter()
    key.open_floats(pairs, VALUE)  # the chart's batch path
    opening = time.perf_counter() - began
    line(
        f"{days}-day chart ({minutes} rows → 200 buckets), median of 3",
        f"{charting * 1000:.0f} ms; AES-GCM open alone {opening * 1000:.0f} ms "
        f"({100 * opening / charting:.1f} %)",
    )

    async def unwrap() -> None:
        database.cipher.forget_cached()
        await database.cipher.key(world_patient.id)

    line(
        "data key unwrap (key-cache miss), median of 50",
        f"{await best_of(50, unwrap) * 1e6:.0f} µs",
    )

    for n in range(patients):
        await provisioning.create_patient(
            database, family=f"Family{n:04d}", given="Bench", identifier=f"B-{n}"
        )

    async def name_search() -> None:
        async with database.read() as conn:
            await Patients(conn).search(name="family00")

    async def cold_name_search() -> None:
        database.cipher.forget_cached()
        await name_search()

    line(
        f"Patient?name= over {patients + 1} patients, keys cached",
        f"{await best_of(5, name_search) * 1000:.0f} ms",
    )
    line(
        f"Patient?name= over {patients + 1} patients, cold key cache",
        f"{await best_of(3, cold_name_search) * 1000:.0f} ms",
    )


async def main(options: argparse.Namespace) -> None:
    print(f"load average {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite")
        await run(
            f"sqlite:///{tmp}/bench.db", Path(tmp) / "keys-sqlite", options.days, options.patients
        )
        version = await postgres_version(options.postgres_url)
        print(f"postgresql {version}")
        if version.startswith("not reachable"):
            return
        name = f"medmesh_bench_{uuid.uuid4().hex[:8]}"
        admin_conn = await asyncpg.connect(admin_dsn(options.postgres_url))
        await admin_conn.execute(f'CREATE DATABASE "{name}"')
        await admin_conn.close()
        url = make_url(options.postgres_url).set(database=name).render_as_string(False)
        try:
            await run(url, Path(tmp) / "keys-pg", options.days, options.patients)
        finally:
            admin_conn = await asyncpg.connect(admin_dsn(options.postgres_url))
            await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin_conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="days of minute readings")
    parser.add_argument("--patients", type=int, default=1000, help="patients for name search")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--quick", action="store_true", help="1 day, 20 patients")
    options = parser.parse_args()
    if options.quick:
        options.days, options.patients = 1, 20
    asyncio.run(main(options))
