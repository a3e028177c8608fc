"""Group commit on both backends: concurrent ingest calls share one transaction, each gets its
own receipt only once committed, and a failed commit fails every call of the group."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh import provisioning
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import parse_body
from medmesh.ingest.pipeline import DeviceBatch, IngestPipeline
from medmesh.store.database import Database
from medmesh.store.schema import observations, pending_evaluations
from medmesh.testing import FrozenClock
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import BASE_TIME, reading


def _items(*message_ids: str, value: float = 72) -> list[Incoming]:
    body = {"readings": [reading(m, value=value) for m in message_ids]}
    return list(parse_body(orjson.dumps(body), 1000))


async def test_concurrent_calls_share_one_commit_and_each_gets_its_own_receipt(
    database: Database, world: World
) -> None:
    other = await provisioning.register_device(database, display_name="second device")
    await provisioning.assign_device(database, other.device_id, world.patient_id, ASSIGNED_SINCE)
    clock = FrozenClock(BASE_TIME + timedelta(minutes=1))
    pipeline = IngestPipeline(database, clock=clock, group_commit=timedelta(milliseconds=50))
    pipeline.on_committed(lambda readings: asyncio.sleep(0))
    await pipeline.after_commit.start()
    try:
        calls = [
            pipeline.ingest(world.device_id, "http", _items("a-1", "a-2")),
            pipeline.ingest(other.device_id, "http", _items("b-1")),
            pipeline.ingest(world.device_id, "http", _items("a-2", "a-3")),
            pipeline.ingest(other.device_id, "http", _items("b-2", value=-5)),
        ]
        first, second, third, fourth = await asyncio.gather(*calls)
        await pipeline.after_commit.settled()
    finally:
        await pipeline.after_commit.stop()
    assert (len(first.stored), first.duplicates) == (2, [])
    assert (len(second.stored), second.duplicates) == (1, [])
    assert (len(third.stored), third.duplicates) == (1, ["a-2"])  # a-2 came in the first call
    assert (fourth.stored, [r.message_id for r in fourth.rejected]) == ([], ["b-2"])
    async with database.read() as conn:
        received = set((await conn.execute(select(observations.c.received_at))).scalars())
        left = (await conn.execute(select(pending_evaluations))).all()
    assert len(received) == 1  # one transaction stamped them all
    assert left == []


async def test_a_failed_group_commit_fails_every_call_and_stores_nothing(
    database: Database, world: World
) -> None:
    pipeline = IngestPipeline(
        database,
        clock=FrozenClock(BASE_TIME + timedelta(minutes=1)),
        group_commit=timedelta(milliseconds=50),
    )

    async def broken(conn: AsyncConnection) -> None:
        raise RuntimeError("status write failed")

    good = pipeline.ingest_many([DeviceBatch(world.device_id, "http", _items("g-1"))])
    bad = pipeline.ingest_many(
        [DeviceBatch(world.device_id, "mqtt", _items("m-1"))],
        also=broken,
    )
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    async with database.read() as conn:
        assert (await conn.execute(select(observations))).first() is None


async def test_a_group_closes_early_at_its_readings_cap(database: Database, world: World) -> None:
    pipeline = IngestPipeline(
        database,
        clock=FrozenClock(BASE_TIME + timedelta(minutes=1)),
        group_commit=timedelta(seconds=30),  # never reached: the cap closes the group
        group_commit_max_readings=3,
    )
    results = await asyncio.wait_for(
        asyncio.gather(
            pipeline.ingest(world.device_id, "http", _items("c-1", "c-2")),
            pipeline.ingest(world.device_id, "http", _items("c-3")),
        ),
        timeout=10,
    )
    assert [len(r.stored) for r in results] == [2, 1]
