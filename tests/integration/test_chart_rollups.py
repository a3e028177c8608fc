"""Chart rollups on both backends: written at ingest with the readings, a chart read from them is
the chart the raw readings give on the same grid (duplicates and a late reading included), and
the backfill rebuilds the same rollups from the readings."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store.database import Database
from medmesh.store.observations import Observations
from medmesh.store.rollup_backfill import patients_with_readings, rebuild
from medmesh.store.rollups import HOUR, MINUTE, RolledUp, Rollups
from medmesh.store.schema import observation_rollups
from medmesh.store.vitals import Bucket, Vitals
from medmesh.web.charts import Grid, load_series, regrid, resolution_for
from medmesh.web.vitals import BLOOD_PRESSURE, HEART_RATE, VitalSpec
from tests.conftest import World

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _reading(
    world: World, key: str, n: int, at: datetime, values: Sequence[MeasuredValue]
) -> Reading:
    measure = measure_by_key(key)
    assert measure is not None
    return Reading(
        device_id=world.device_id,
        message_id=f"{key}-{n}",
        patient_id=world.patient_id,
        measure=measure,
        effective=at,
        values=tuple(values),
    )


def recorded_stream(world: World) -> list[list[Reading]]:
    """Eight days of heart rate every 97 s and blood pressure every 20 min, some readings on a
    minute's or hour's very edge, in batches of 100, then: a batch sent again (redelivered),
    a batch with a reading inside itself twice, and a reading taken a week ago arriving last."""
    rng = random.Random(11)
    start = END - timedelta(days=8)
    readings: list[Reading] = []
    for n in range(int(8 * 86400 / 97)):
        at = start + timedelta(seconds=97 * n)
        if n % 50 == 0:
            at = at.replace(second=0, microsecond=0)  # exactly on a minute
        hr = MeasuredValue("8867-4", float(rng.randint(45, 150)), "/min")
        readings.append(_reading(world, "heart-rate", n, at, [hr]))
    for n in range(8 * 72):
        at = start + timedelta(minutes=20 * n, seconds=3)
        bp = [
            MeasuredValue("8480-6", float(rng.randint(95, 180)), "mm[Hg]"),
            MeasuredValue("8462-4", float(rng.randint(55, 110)), "mm[Hg]"),
        ]
        readings.append(_reading(world, "blood-pressure", n, at, bp))
    readings.sort(key=lambda r: r.effective)
    late = readings.pop(len(readings) // 8)  # taken a week ago, stored last
    batches = [readings[i : i + 100] for i in range(0, len(readings), 100)]
    batches.append(batches[3])  # the broker redelivers a whole batch
    batches.append([*batches[5][:10], batches[5][0]])  # and a reading twice within one
    batches.append([late])
    return batches


async def ingest(database: Database, batches: list[list[Reading]]) -> None:
    for batch in batches:
        async with database.write() as conn:
            await Observations(conn).add_batch(batch, END)


async def chart_from_readings(
    database: Database, world: World, vital: VitalSpec, start: datetime, grid: Grid
) -> list[tuple[str, list[Bucket]]]:
    """What the chart must show: every stored reading, bucketed on the grid in Python."""
    expected = []
    async with database.read() as conn:
        for spec in vital.series:
            raw = await Vitals(conn).series(
                world.patient_id,
                spec.code,
                component=spec.component,
                after=datetime.fromtimestamp(grid.origin, UTC) - timedelta(microseconds=1),
                until=END,
            )
            points = [(at.timestamp(), value) for at, value in raw]
            expected.append(
                (
                    spec.key,
                    regrid([(grid.index(t), Bucket(t, v, v, v, 1)) for t, v in points], grid),
                )
            )
    return expected


def assert_same_chart(
    got: list[tuple[str, list[Bucket]]], expected: list[tuple[str, list[Bucket]]]
) -> None:
    assert [key for key, _ in got] == [key for key, _ in expected]
    for (_, buckets), (key, wanted) in zip(got, expected, strict=True):
        assert len(buckets) == len(wanted) > 0, key
        for b, w in zip(buckets, wanted, strict=True):
            assert (b.count, b.low, b.high) == (w.count, w.low, w.high), key
            assert b.mean == pytest.approx(w.mean, rel=1e-9), key
            assert b.at == pytest.approx(w.at, abs=1e-3), key


@pytest.mark.parametrize("span", [timedelta(hours=24), timedelta(days=7)])
async def test_a_chart_from_rollups_equals_the_chart_from_the_raw_readings(
    database: Database, world: World, span: timedelta
) -> None:
    await ingest(database, recorded_stream(world))
    start = END - span
    resolution = resolution_for(span)
    assert resolution == (MINUTE if span <= timedelta(hours=48) else HOUR)
    grid = Grid.aligned(start, END, resolution)
    for vital in (HEART_RATE, BLOOD_PRESSURE):
        async with database.read() as conn:
            got = await load_series(Vitals(conn), world.patient_id, vital, start, END)
        assert_same_chart(got, await chart_from_readings(database, world, vital, start, grid))


async def test_a_ninety_day_chart_reads_hourly_rollups_not_every_reading(
    database: Database, world: World
) -> None:
    await ingest(database, recorded_stream(world))
    start = END - timedelta(days=90)
    async with database.read() as conn:
        rolled = await Vitals(conn).rolled_up(
            world.patient_id, "8867-4", resolution=HOUR, since=start, until=END
        )
        [(_, buckets)] = await load_series(Vitals(conn), world.patient_id, HEART_RATE, start, END)
    assert len(rolled) == 8 * 24  # one row an hour of the eight days
    # Each reading stored once counts once: the redelivered ones do not add up.
    assert sum(r.stats.count for r in rolled) == int(8 * 86400 / 97)
    assert sum(b.count for b in buckets) == int(8 * 86400 / 97)
    assert len(buckets) <= 500


async def test_a_late_reading_updates_the_bucket_it_was_taken_in(
    database: Database, world: World
) -> None:
    at = END - timedelta(days=3, minutes=30, seconds=10)
    first = [
        _reading(
            world,
            "heart-rate",
            n,
            at + timedelta(seconds=n),
            [MeasuredValue("8867-4", 60.0 + n, "/min")],
        )
        for n in range(3)
    ]
    late = _reading(
        world, "heart-rate", 9, at + timedelta(seconds=5), [MeasuredValue("8867-4", 140.0, "/min")]
    )
    await ingest(
        database,
        [
            first,
            [_reading(world, "heart-rate", 5, END, [MeasuredValue("8867-4", 70.0, "/min")])],
            [late],
        ],
    )

    async def minute() -> RolledUp:
        async with database.read() as conn:
            [rolled] = await Rollups(conn).read(
                world.patient_id,
                "8867-4",
                resolution=MINUTE,
                since=at - timedelta(minutes=1),
                until=at,
            )
        return rolled

    bucket = await minute()
    assert (bucket.stats.count, bucket.stats.low, bucket.stats.high) == (4, 60.0, 140.0)
    assert bucket.mean == pytest.approx((60 + 61 + 62 + 140) / 4)


async def test_the_backfill_rebuilds_the_rollups_ingest_wrote(
    database: Database, world: World
) -> None:
    await ingest(database, recorded_stream(world))

    async def everything() -> list[tuple[str, str, int, int, int, float, float, float]]:
        rows = []
        async with database.read() as conn:
            for code, component in (("8867-4", None), ("85354-9", "8480-6"), ("85354-9", "8462-4")):
                for resolution in (MINUTE, HOUR):
                    for r in await Rollups(conn).read(
                        world.patient_id,
                        code,
                        component=component,
                        resolution=resolution,
                        since=END - timedelta(days=10),
                        until=END + timedelta(hours=1),
                    ):
                        rows.append(
                            (
                                code,
                                component or "",
                                resolution,
                                r.bucket,
                                r.stats.count,
                                r.stats.low,
                                r.stats.high,
                                round(r.mean, 6),
                            )
                        )
        return rows

    written_at_ingest = await everything()
    async with database.write() as conn:
        await conn.execute(observation_rollups.delete())
    async with database.read() as conn:
        assert await patients_with_readings(conn) == [world.patient_id]
    async with database.write() as conn:
        folded = await rebuild(conn, world.patient_id)
    assert folded == int(8 * 86400 / 97) + 8 * 72
    assert await everything() == written_at_ingest
    async with database.write() as conn:  # running it again changes nothing
        await rebuild(conn, world.patient_id)
        count = (
            await conn.execute(select(func.count()).select_from(observation_rollups))
        ).scalar_one()
    assert count == len(written_at_ingest)


def test_the_backfill_command_builds_rollups_of_readings_stored_before_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medmesh.cli import app
    from tests.conftest import make_world

    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)

    async def older_database() -> None:
        database = Database(database_url)
        try:
            world = await make_world(database)
            await ingest(database, recorded_stream(world)[:5])
            async with database.write() as conn:  # as if stored before rollups existed
                await conn.execute(observation_rollups.delete())
        finally:
            await database.dispose()

    async def rollup_rows() -> int:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                query = select(func.count()).select_from(observation_rollups)
                return int((await conn.execute(query)).scalar_one())
        finally:
            await database.dispose()

    asyncio.run(older_database())
    assert asyncio.run(rollup_rows()) == 0
    result = CliRunner().invoke(app, ["db", "backfill-rollups"])
    assert result.exit_code == 0, result.output
    assert "rollups rebuilt for 1 patients from 500 readings" in result.output
    assert asyncio.run(rollup_rows()) > 0


async def test_concurrent_batches_of_one_patient_add_up_in_their_buckets(
    database: Database, world: World
) -> None:
    """Two writers (two processes' transactions on PostgreSQL) folding readings of the same
    minutes and hour at once: no update is lost, none counted twice."""
    at = END - timedelta(hours=2)
    streams = [
        [
            _reading(
                world,
                "heart-rate",
                1000 * writer + n,
                at + timedelta(seconds=n),
                [MeasuredValue("8867-4", float(60 + writer), "/min")],
            )
            for n in range(120)
        ]
        for writer in range(2)
    ]

    async def writer(readings: list[Reading]) -> None:
        for start in range(0, len(readings), 10):
            async with database.write() as conn:
                await Observations(conn).add_batch(readings[start : start + 10], END)

    await asyncio.gather(*(writer(s) for s in streams))
    async with database.read() as conn:
        minutes = await Rollups(conn).read(
            world.patient_id, "8867-4", resolution=MINUTE, since=at, until=END
        )
        [hour] = await Rollups(conn).read(
            world.patient_id, "8867-4", resolution=HOUR, since=at, until=END
        )
    assert [m.stats.count for m in minutes] == [120, 120]
    assert (hour.stats.count, hour.stats.low, hour.stats.high) == (240, 60.0, 61.0)
    assert hour.mean == pytest.approx(60.5)
