"""The dashboard's reads on both backends: latest vitals in one statement, and the store's
bucketing of long ranges (over decrypted values) agreeing with the Python downsampler."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from medmesh import provisioning
from medmesh.store.database import Database
from medmesh.store.observations import COMPONENT_VALUE, VALUE, component_row
from medmesh.store.schema import observation_components, observations
from medmesh.store.vitals import Vitals
from medmesh.web.charts import Grid, downsample, regrid
from medmesh.web.vitals import PANEL_CODES
from tests.conftest import World

START = datetime(2026, 10, 1, tzinfo=UTC)


async def store(database: Database, world: World, rows: list[dict[str, Any]]) -> None:
    """Insert observation rows, their values sealed as the repository seals them."""
    base = {"patient_id": world.patient_id, "device_id": world.device_id, "unit": "/min"}
    key = await database.cipher.key(world.patient_id)
    full = [{**base, "id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()), **r} for r in rows]
    for r in full:
        r["received_at"] = r["effective"]
        if r["value"] is not None:
            r["value"] = key.seal_float(r["value"], VALUE, r["id"])
    async with database.write() as conn:
        await conn.execute(observations.insert(), full)


async def store_components(
    database: Database, world: World, rows: list[tuple[str, str, float]]
) -> None:
    """Insert panel components (observation id, code, value), sealed."""
    key = await database.cipher.key(world.patient_id)
    async with database.write() as conn:
        await conn.execute(
            observation_components.insert(),
            [
                {
                    "observation_id": i,
                    "code": code,
                    "value": key.seal_float(value, COMPONENT_VALUE, component_row(i, code)),
                    "unit": "mm[Hg]",
                }
                for i, code, value in rows
            ],
        )


async def test_database_buckets_match_the_python_downsampler(
    database: Database, world: World
) -> None:
    rng = random.Random(7)
    # Every 7 minutes and 17 seconds past: never on a bucket edge, where float rounding could
    # put a reading on either side.
    rows = [
        {
            "code": "8867-4",
            "effective": START + timedelta(seconds=420 * i + 17),
            "value": float(rng.randint(40, 160)),
        }
        for i in range(3000)
    ]
    await store(database, world, rows)
    end = START + timedelta(days=30)
    grid = Grid.over(START, end, count=200)
    async with database.read() as conn:
        indexed = await Vitals(conn).buckets(
            world.patient_id, "8867-4", origin=START, width=grid.width
        )
        raw = await Vitals(conn).series(world.patient_id, "8867-4", after=START)
    in_database = regrid(indexed, grid)
    in_python = downsample([(t.timestamp(), v) for t, v in raw], grid)
    assert len(in_database) == len(in_python) <= 200
    for a, b in zip(in_database, in_python, strict=True):
        assert (a.count, a.low, a.high) == (b.count, b.low, b.high)
        assert math.isclose(a.mean, b.mean, rel_tol=1e-9)
        assert math.isclose(a.at, b.at, abs_tol=0.01)


async def test_panel_components_are_bucketed_per_quantity(database: Database, world: World) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await store(
        database,
        world,
        [
            {"id": i, "code": "85354-9", "effective": START + timedelta(hours=n), "value": None}
            for n, i in enumerate(ids)
        ],
    )
    await store_components(
        database,
        world,
        [
            (i, code, value + n)
            for n, i in enumerate(ids)
            for code, value in (("8480-6", 120.0), ("8462-4", 80.0))
        ],
    )
    async with database.read() as conn:
        systolic = await Vitals(conn).buckets(
            world.patient_id,
            "85354-9",
            component="8480-6",
            origin=START - timedelta(hours=1),
            width=86_400,
        )
        diastolic = await Vitals(conn).series(
            world.patient_id, "85354-9", component="8462-4", after=START - timedelta(1)
        )
    [(index, bucket)] = systolic
    assert index == 0 and (bucket.low, bucket.high, bucket.count) == (120.0, 122.0, 3)
    assert [v for _, v in diastolic] == [80.0, 81.0, 82.0]


async def test_latest_vitals_of_a_whole_page_take_two_statements(
    database: Database, world: World
) -> None:
    patients = [world.patient_id]
    for n in range(49):
        patient = await provisioning.create_patient(
            database, family=f"P{n}", given="T", identifier=f"PAGE-{n}"
        )
        patients.append(patient.id)
    rows = [
        {"code": "8867-4", "effective": START + timedelta(minutes=m), "value": float(60 + m)}
        for m in range(5)
    ] + [{"id": "bp", "code": "85354-9", "effective": START, "value": None}]
    await store(database, world, rows)
    await store_components(database, world, [("bp", "8480-6", 130.0), ("bp", "8462-4", 85.0)])
    statements: list[str] = []
    async with database.read() as conn:

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(conn.sync_connection, "before_cursor_execute", count)
        latest = await Vitals(conn).latest(patients, PANEL_CODES)
        event.remove(conn.sync_connection, "before_cursor_execute", count)
    assert len(statements) == 2
    heart = latest[(world.patient_id, "8867-4")]
    assert heart.values == {"8867-4": 64.0} and heart.effective == START + timedelta(minutes=4)
    assert latest[(world.patient_id, "85354-9")].values == {"8480-6": 130.0, "8462-4": 85.0}
    assert len(latest) == 2
