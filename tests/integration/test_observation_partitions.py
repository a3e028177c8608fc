"""Observations partitioned by month on PostgreSQL: partitions made ahead by medmesh, nothing
refused (a reading of any time lands somewhere), dedupe unchanged, the patient/code/time reads
served by an index on the one partition they need, and the migration converting a table that
already holds readings. SQLite keeps one plain table."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from medmesh import provisioning
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.partitions import (
    DEFAULT,
    MONTHS_AHEAD,
    PartitionMaintainer,
    add_months,
    ensure_partitions,
    existing_partitions,
    is_partitioned,
    month_start,
    partition_name,
)
from medmesh.store.schema import observations, patient_identifiers
from tests.conftest import POSTGRES_URL, World, _create_pg_database, _drop_pg_database, make_world

NOW = datetime.now(UTC)


def heart_rate(
    patient_id: str, device_id: str, n: int, at: datetime, value: float = 70.0
) -> Reading:
    measure = measure_by_key("heart-rate")
    assert measure is not None
    return Reading(
        device_id,
        f"hr-{n}",
        patient_id,
        measure,
        at,
        (MeasuredValue("8867-4", value, "/min"),),
    )


async def where_stored(database: Database) -> dict[str, int]:
    async with database.read() as conn:
        rows = await conn.execute(
            text("SELECT tableoid::regclass::text, count(*) FROM observations GROUP BY 1")
        )
        return {name: count for name, count in rows}


async def test_sqlite_keeps_one_plain_table(database: Database) -> None:
    if database.backend != "sqlite":
        pytest.skip("SQLite only")
    async with database.write() as conn:
        assert not await is_partitioned(conn)
        assert await ensure_partitions(conn, NOW) == []


@pytest.fixture
async def pg(database: Database) -> Database:
    if database.backend != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    return database


async def test_partitions_exist_ahead_and_a_reading_of_any_time_is_stored_once(
    pg: Database, world: World
) -> None:
    await PartitionMaintainer(pg).start()  # what `medmesh serve` does at start
    async with pg.read() as conn:
        assert await is_partitioned(conn)
        have = await existing_partitions(conn)
    months = [add_months(month_start(NOW), n) for n in range(MONTHS_AHEAD + 1)]
    assert {partition_name(m) for m in months} | {DEFAULT} <= have

    long_ago = datetime(2019, 3, 14, 15, 9, tzinfo=UTC)  # no partition of its month
    readings = [
        heart_rate(world.patient_id, world.device_id, 0, NOW - timedelta(minutes=1)),
        heart_rate(world.patient_id, world.device_id, 1, long_ago),
    ]
    for _ in range(2):  # sent twice: stored once
        async with pg.write() as conn:
            inserted = await Observations(conn).add_batch(readings, NOW)
        assert len(inserted) == (2 if _ == 0 else 0)
    stored = await where_stored(pg)
    assert stored == {partition_name(month_start(NOW)): 1, DEFAULT: 1}

    # The next round gives the stray month its partition and moves the reading into it.
    async with pg.write() as conn:
        created = await ensure_partitions(conn, NOW)
    assert created == [partition_name(datetime(2019, 3, 1, tzinfo=UTC))]
    assert await where_stored(pg) == {
        partition_name(month_start(NOW)): 1,
        "observations_p2019_03": 1,
    }
    async with pg.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=world.patient_id))
    assert sorted(o.effective for o in found) == sorted(r.effective for r in readings)


async def test_readings_written_while_a_stray_month_moves_are_kept(
    pg: Database, world: World
) -> None:
    """A reading of a month that waits in the default partition, written while that month's
    readings move into their own partition (a process starting under load does this), is
    neither refused nor does it make the move fail: it ends in the new partition."""
    await PartitionMaintainer(pg).run_once()
    stray = datetime(2017, 5, 14, 15, 9, tzinfo=UTC)  # a month no other test uses
    async with pg.write() as conn:
        await Observations(conn).add_batch(
            [heart_rate(world.patient_id, world.device_id, 0, stray)], NOW
        )

    writer = await pg.engine.connect()  # another process's transaction, open across the move
    try:
        transaction = await writer.begin()
        late = heart_rate(world.patient_id, world.device_id, 1, stray + timedelta(hours=1))
        await Observations(writer).add_batch([late], NOW)
        moving = asyncio.create_task(PartitionMaintainer(pg).run_once())
        await asyncio.sleep(0.5)  # the move has started and waits for the writer
        assert not moving.done()
        await transaction.commit()
    finally:
        await writer.close()
    assert await asyncio.wait_for(moving, timeout=30) == ["observations_p2017_05"]
    assert (await where_stored(pg)).get("observations_p2017_05") == 2


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


async def test_a_patients_day_of_one_code_is_read_through_an_index_of_one_partition(
    pg: Database,
) -> None:
    worlds = [await make_world(pg, identifier=f"MRN-{i}") for i in range(4)]
    start = month_start(NOW) - timedelta(days=75)
    async with pg.write() as conn:
        await ensure_partitions(conn, NOW, since=start)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "patient_id": w.patient_id,
                "device_id": w.device_id,
                "message_id": str(uuid.uuid4()),
                "code": code,
                "effective": start + timedelta(minutes=5 * n),
                "value": b"\x01" * 37,
                "unit": "/min",
                "received_at": start,
            }
            for w in worlds
            for code in ("8867-4", "2708-6")
            for n in range(0, 100 * 24 * 12, 3)
        ]
        for i in range(0, len(rows), 5000):
            await conn.execute(observations.insert(), rows[i : i + 5000])
        await conn.execute(text("ANALYZE observations"))
    day_end = start + timedelta(days=40)
    query = text(
        "EXPLAIN (FORMAT JSON) SELECT id, effective, value FROM observations "
        "WHERE patient_id = :patient AND code = :code AND effective > :after "
        "AND effective <= :until ORDER BY effective"
    )
    async with pg.read() as conn:
        result = await conn.execute(
            query,
            {
                "patient": worlds[1].patient_id,
                "code": "8867-4",
                "after": day_end - timedelta(hours=24),
                "until": day_end,
            },
        )
        [[document]] = result.all()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    nodes = _plan_nodes(plan)
    scanned = {n["Relation Name"] for n in nodes if "Relation Name" in n}
    assert scanned == {partition_name(month_start(day_end))}, nodes  # the others pruned
    assert {n["Node Type"] for n in nodes} & {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    name = f"medmesh_parts_{uuid.uuid4().hex[:10]}"
    try:
        await _create_pg_database(name)
    except OSError as exc:
        pytest.skip(f"PostgreSQL is not reachable ({type(exc).__name__})")
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    await _drop_pg_database(name)


async def test_the_migration_moves_stored_readings_into_monthly_partitions(
    fresh_pg: str, tmp_path: Any
) -> None:
    database = Database(fresh_pg)
    try:
        await migrate.upgrade(database, "0020")
        # Only a patient and a device, no accounts: today's provisioning writes the tables of
        # later migrations too (a patient's other identifiers, 0024, is lent for the set-up and
        # dropped before the real upgrade; accounts' sealed TOTP keys, 0025, are not needed).
        async with database.write() as conn:
            await conn.run_sync(patient_identifiers.create)
        patient = await provisioning.create_patient(
            database, family="Old", given="Schema", identifier="MRN-OLD"
        )
        device = await provisioning.register_device(database, display_name="Old monitor")
        readings = [
            heart_rate(patient.id, device.device_id, n, NOW - timedelta(days=20 * n), 60.0 + n)
            for n in range(6)
        ]
        async with database.write() as conn:
            await Observations(conn).add_batch(readings, NOW)
            await conn.run_sync(patient_identifiers.drop)

        await migrate.upgrade(database)

        async with database.read() as conn:
            assert await is_partitioned(conn)
            found = await Observations(conn).search(
                ObservationQuery(patient_id=patient.id, limit=10)
            )
        assert sorted(o.values[0].value for o in found) == [60.0 + n for n in range(6)]
        stored = await where_stored(database)
        assert DEFAULT not in stored
        assert stored == {
            partition_name(month_start(r.effective)): sum(
                month_start(o.effective) == month_start(r.effective) for o in readings
            )
            for r in readings
        }
        async with database.write() as conn:  # redelivered after the migration: stored once
            assert await Observations(conn).add_batch(readings[:2], NOW) == set()
    finally:
        await database.dispose()
