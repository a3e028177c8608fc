"""Repositories against the real database, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.domain.errors import Conflict, NotFound
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.registry import DeviceAssignment
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter, DeadLetters
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observations import (
    COPY_FROM_ROWS,
    ObservationQuery,
    Observations,
    TimeBound,
)
from medmesh.store.registry import Assignments, Devices, Patients
from medmesh.store.schema import metadata, observation_components
from tests.conftest import World

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def _heart_rate(world: World, message_id: str, at: datetime, value: float = 70) -> Reading:
    measure = measure_by_key("heart-rate")
    assert measure is not None
    return Reading(
        world.device_id,
        message_id,
        world.patient_id,
        measure,
        at,
        (MeasuredValue("8867-4", value, "/min"),),
    )


def _partition_differences(diff: list[object]) -> list[object]:
    """What PostgreSQL's partitioned `observations` differs in, by design (migrations 0021
    and 0028, docs/scaling.md): no dedupe key beside the primary key (id, effective), no
    foreign keys from or to observations."""
    return [
        d
        for d in diff
        if isinstance(d, tuple)
        and (
            (d[0], d[1].name) == ("add_constraint", "uq_observations_device_id_message_id")
            or (d[0] == "add_fk" and "observations" in (d[1].referred_table.name, d[1].parent.name))
        )
    ]


async def test_migrations_produce_exactly_the_declared_schema(database: Database) -> None:
    def partition(name: str | None, kind: str, _: object) -> bool:
        # Monthly partitions are made by medmesh at run time, not declared (store/partitions.py).
        return not (kind in ("table", "index") and name and name.startswith("observations_"))

    def diff(connection) -> list[object]:  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"include_name": partition})
        return list(compare_metadata(context, metadata))

    async with database.read() as conn:
        found = await conn.run_sync(diff)
    if database.backend == "postgresql":
        by_design = _partition_differences(found)
        assert len(by_design) >= 4  # dedupe key; foreign keys to patients, devices; components
        found = [d for d in found if d not in by_design]
    assert found == []


async def test_patient_identifier_is_unique(database: Database, world: World) -> None:
    with pytest.raises(Conflict):
        await provisioning.create_patient(database, family="X", given="Y", identifier="MRN-1")
    async with database.read() as conn:
        found = await Patients(conn).find_by_identifier("urn:medmesh:mrn", "MRN-1")
    assert found is not None and found.id == world.patient_id


async def test_unknown_patient_and_device_are_not_found(database: Database) -> None:
    async with database.read() as conn:
        with pytest.raises(NotFound):
            await Patients(conn).get(str(uuid.uuid4()))
        with pytest.raises(NotFound):
            await Devices(conn).get(str(uuid.uuid4()))


async def test_device_is_found_by_its_secret_hash_and_rotation_retires_the_old_one(
    database: Database, world: World
) -> None:
    from medmesh.access.identity.credentials import hash_secret

    rotated = await provisioning.rotate_device_secret(database, world.device_id)
    async with database.read() as conn:
        devices = Devices(conn)
        assert await devices.find_by_secret_hash(hash_secret(world.device_secret)) is None
        found = await devices.find_by_secret_hash(hash_secret(rotated.secret))
    assert found is not None and found.id == world.device_id


async def test_new_assignment_closes_the_open_one(database: Database, world: World) -> None:
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    await provisioning.assign_device(database, world.device_id, other.id, T0)
    async with database.read() as conn:
        history = await Assignments(conn).for_device(world.device_id)
    assert [(a.patient_id, a.end) for a in history] == [(world.patient_id, T0), (other.id, None)]


async def test_overlapping_assignments_are_refused(database: Database, world: World) -> None:
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    await provisioning.assign_device(database, world.device_id, other.id, T0)
    async with database.write() as conn:
        with pytest.raises(Conflict):
            # Starts before the current (open) assignment began: would overlap it.
            await Assignments(conn).assign(
                DeviceAssignment(world.device_id, other.id, T0 - timedelta(days=1))
            )


async def test_observation_batch_insert_is_idempotent(database: Database, world: World) -> None:
    batch = [_heart_rate(world, f"m{i}", T0 + timedelta(minutes=i)) for i in range(3)]
    for _ in range(2):
        async with database.write() as conn:
            await Observations(conn).add_batch(batch, T0)
    async with database.read() as conn:
        stored = await Observations(conn).search(ObservationQuery(patient_id=world.patient_id))
        ids = await Observations(conn).existing_ids([r.observation_id for r in batch] + ["nope"])
    assert [o.effective for o in stored] == [r.effective for r in batch]
    assert ids == {r.observation_id for r in batch}


async def test_a_copied_batch_with_stored_readings_keeps_the_rest(
    database: Database, world: World
) -> None:
    """A batch big enough for COPY on PostgreSQL that repeats stored readings: those are
    reported as not inserted, the new ones are stored, and what the transaction wrote before
    the batch stays."""
    first = [_heart_rate(world, f"c{i}", T0 + timedelta(minutes=i), 60 + i) for i in range(30)]
    resent = first[10:] + [
        _heart_rate(world, f"c{i}", T0 + timedelta(minutes=i), 60 + i) for i in range(30, 45)
    ]
    assert len(resent) >= COPY_FROM_ROWS
    async with database.write() as conn:
        assert await Observations(conn).add_batch(first, T0) == {r.observation_id for r in first}
    letter = DeadLetter(T0, "http", world.device_id, "x", "implausible-value", "out of range", "")
    async with database.write() as conn:
        await DeadLetters(conn).add_many([letter])
        inserted = await Observations(conn).add_batch(resent, T0)
    assert inserted == {r.observation_id for r in resent[20:]}
    async with database.read() as conn:
        stored = await Observations(conn).search(
            ObservationQuery(patient_id=world.patient_id, limit=100)
        )
        letters = await DeadLetters(conn).for_device(world.device_id)
    assert [o.values[0].value for o in stored] == [60 + i for i in range(45)]
    assert letters == [letter]


async def test_panel_components_round_trip(database: Database, world: World) -> None:
    measure = measure_by_key("blood-pressure")
    assert measure is not None
    panel = Reading(
        world.device_id,
        "bp",
        world.patient_id,
        measure,
        T0,
        (MeasuredValue("8480-6", 140.0, "mm[Hg]"), MeasuredValue("8462-4", 90.0, "mm[Hg]")),
    )
    for _ in range(2):
        async with database.write() as conn:
            await Observations(conn).add_batch([panel], T0)
    async with database.read() as conn:
        stored = await Observations(conn).get(panel.observation_id)
        components = (
            await conn.execute(select(func.count()).select_from(observation_components))
        ).scalar_one()
    assert stored.code == "85354-9"
    assert sorted((v.code, v.value) for v in stored.values) == [("8462-4", 90.0), ("8480-6", 140.0)]
    assert components == 2


async def test_search_filters_by_code_time_and_order(database: Database, world: World) -> None:
    batch = [_heart_rate(world, f"m{i}", T0 + timedelta(minutes=i), 60 + i) for i in range(10)]
    async with database.write() as conn:
        await Observations(conn).add_batch(batch, T0)
    query = ObservationQuery(
        patient_id=world.patient_id,
        codes=("8867-4",),
        bounds=(
            TimeBound("ge", T0 + timedelta(minutes=2)),
            TimeBound("lt", T0 + timedelta(minutes=6)),
        ),
        newest_first=True,
        limit=3,
    )
    async with database.read() as conn:
        found = await Observations(conn).search(query)
        other_code = await Observations(conn).search(ObservationQuery(codes=("2708-6",)))
    assert [o.values[0].value for o in found] == [65, 64, 63]
    assert other_code == []


async def test_times_keep_their_instant_across_offsets(database: Database, world: World) -> None:
    from datetime import timezone

    local = datetime(2026, 11, 24, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    async with database.write() as conn:
        await Observations(conn).add_batch([_heart_rate(world, "tz", local)], T0)
    async with database.read() as conn:
        (stored,) = await Observations(conn).search(
            ObservationQuery(bounds=(TimeBound("ge", datetime(2026, 11, 24, 8, 30, tzinfo=UTC)),))
        )
    assert stored.effective == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


async def test_dead_letters_keep_reason_and_payload(database: Database, world: World) -> None:
    letter = DeadLetter(
        T0, "http", world.device_id, "m1", "implausible-value", "out of range", "{}"
    )
    async with database.write() as conn:
        await DeadLetters(conn).add_many([letter])
    async with database.read() as conn:
        assert await DeadLetters(conn).for_device(world.device_id) == [letter]


async def test_failed_transaction_leaves_nothing_behind(database: Database, world: World) -> None:
    batch = [_heart_rate(world, "rolled-back", T0)]
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await Observations(conn).add_batch(batch, T0)
            raise RuntimeError("crash before commit")
    async with database.read() as conn:
        assert await Observations(conn).existing_ids([batch[0].observation_id]) == set()


async def test_devices_heard_from_together_are_each_seen_in_one_write(database: Database) -> None:
    """A group commit records every device of the group as heard from: new ones and known
    ones, each once however many of its batches the group holds."""
    ids = [
        (await provisioning.register_device(database, display_name=f"d{n}")).device_id
        for n in range(3)
    ]
    earlier = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    later = earlier + timedelta(minutes=5)
    async with database.write() as conn:
        await DeviceStatuses(conn).seen([ids[0]], earlier)
    async with database.write() as conn:
        await DeviceStatuses(conn).seen([ids[2], ids[0], ids[1], ids[0]], later)
        await DeviceStatuses(conn).seen([], later)  # a group of refused messages only
    async with database.read() as conn:
        statuses = [await DeviceStatuses(conn).get(device_id) for device_id in ids]
    assert [s.last_seen if s else None for s in statuses] == [later, later, later]
