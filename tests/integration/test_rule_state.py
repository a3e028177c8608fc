"""Incremental rules on both backends: judging from each patient's rule state raises exactly the
alerts that judging from the stored window raises, with several processes, across a restart,
after a care plan change, and erasure takes the state with the patient."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from medmesh import provisioning
from medmesh.access.erasure import erase_patient
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.alerts import Alert, AlertStatus
from medmesh.domain.care_plans import CarePlan
from medmesh.events.bus import InProcessBus
from medmesh.ingest.native import parse_body
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.rules.catalog import RULE_CODES, codes_to_read
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.engine import RuleEngine
from medmesh.rules.state import Head, RuleState
from medmesh.sim.models import (
    AtrialFibrillationPatient,
    CopdPatient,
    HypertensivePatient,
    PatientModel,
    Type1DiabeticPatient,
)
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from medmesh.store.rule_states import RuleStates, SegmentWrite, StatePut
from medmesh.store.schema import rule_state_segments, rule_states
from medmesh.testing import FrozenClock
from tests.conftest import World, make_world
from tests.crypto_fixtures import keyed_database
from tests.helpers import BASE_TIME, reading, stamp

MINUTE = timedelta(minutes=1)
DAY = datetime(2026, 11, 24, tzinfo=UTC)


@dataclass
class Process:
    """One medmesh process's ingest pipeline and rule engine (its own cached states)."""

    pipeline: IngestPipeline
    engine: RuleEngine

    async def send(self, device_id: str, items: Sequence[dict[str, Any]]) -> None:
        batch = parse_body(orjson.dumps({"readings": list(items)}), 1000)
        result = await self.pipeline.ingest(device_id, "http", batch)
        assert not result.rejected
        await self.pipeline.after_commit.settled()

    async def stop(self) -> None:
        await self.pipeline.after_commit.stop()


async def start(database: Database, clock: FrozenClock, *, incremental: bool = True) -> Process:
    pipeline = IngestPipeline(database, clock=clock)
    held = pipeline.after_commit.held
    engine = RuleEngine(database, InProcessBus(), clock, incremental=incremental, held=held)
    pipeline.on_committed(engine.on_committed)
    await pipeline.after_commit.start()
    return Process(pipeline, engine)


def _judged(alert: Alert) -> tuple[object, ...]:
    """An alert without what names the patient, device or row."""
    return (
        alert.rule,
        alert.severity,
        alert.status,
        alert.title,
        alert.detail,
        alert.opened_at,
        alert.last_triggered_at,
        alert.trigger_count,
        alert.resolved_at,
        alert.resolution,
    )


async def _alerts(database: Database, patient_id: str) -> list[Alert]:
    async with database.read() as conn:
        found = await Alerts(conn).search(patient_id, limit=10_000)
    return sorted(found, key=lambda a: (a.opened_at, a.rule))


def _time(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["time"].replace("Z", "+00:00"))


def _batches(items: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Batches of varying sizes, in time order, and one held back an hour (a device catching
    up: older than what the state keeps, so it is rebuilt from history)."""
    sizes = [1, 3, 7, 2, 15, 1, 1, 4]
    batches: list[list[dict[str, Any]]] = []
    rest = list(items)
    while rest:
        size = sizes[len(batches) % len(sizes)]
        batches.append(rest[:size])
        rest = rest[size:]
    late = len(batches) // 3
    held = batches.pop(late)
    newer = [i for i, b in enumerate(batches) if _time(b[0]) > _time(held[-1]) + 2 * MINUTE * 60]
    batches.insert(newer[0] if newer else len(batches), held)
    return batches


MODELS: dict[str, tuple[PatientModel, datetime, dict[str, float]]] = {
    # Two desaturation episodes (tests/integration/test_alert_rules.py), NEWS2 from SpO2,
    # respiration and pulse.
    "copd": (CopdPatient("copd", seed=112), DAY + timedelta(hours=12), {"spo2_low": 88}),
    "type-1-diabetes": (
        Type1DiabeticPatient("t1d", seed=3),
        DAY + timedelta(hours=6),
        {
            "glucose_high": 200,
            "glucose_high_clear": 180,
            "glucose_low": 135,
            "glucose_low_clear": 140,
            "glucose_fall_rate": 0.8,
            "glucose_fall_clear": 0.4,
        },
    ),
    "hypertension": (
        HypertensivePatient("htn", seed=5, cadences={"blood-pressure": 10 * MINUTE}),
        DAY + timedelta(hours=8),
        {"systolic_crisis": 150},
    ),
    "atrial-fibrillation": (
        AtrialFibrillationPatient("af", seed=7),
        DAY + timedelta(hours=8),
        {"heart_rate_high": 115, "heart_rate_high_clear": 110},
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
async def test_judging_from_rule_state_raises_exactly_the_alerts_of_reading_the_window(
    database: Database, name: str
) -> None:
    """The same recorded stream through the old full-window evaluation (one patient) and the
    incremental one (another), batches of varying sizes, one late, a care plan changed midway
    (that also lengthens the rules' window): every alert the same."""
    model, start_at, overrides = MODELS[name]
    items = model.readings_between(start_at, start_at + timedelta(hours=5))
    old_world = await make_world(database, "MRN-OLD")
    new_world = await make_world(database, "MRN-NEW")
    clock = FrozenClock(start_at)
    old = await start(database, clock, incremental=False)
    new = await start(database, clock)
    try:
        batches = _batches(items)
        for index, batch in enumerate(batches):
            if index == len(batches) // 2:
                for world in (old_world, new_world):
                    plan = CarePlan(world.patient_id, {**overrides, "news2_max_age_minutes": 90})
                    async with database.write() as conn:
                        await CarePlans(conn).put(plan, clock.at, "dr plan")
            clock.at = max(clock.at, max(map(_time, batch)) + timedelta(seconds=30))
            await old.send(old_world.device_id, batch)
            await new.send(new_world.device_id, batch)
    finally:
        await old.stop()
        await new.stop()
    expected = [_judged(a) for a in await _alerts(database, old_world.patient_id)]
    got = [_judged(a) for a in await _alerts(database, new_world.patient_id)]
    assert expected, "the stream raises alerts"
    assert got == expected


def test_the_state_keeps_every_code_the_rules_read() -> None:
    everything = codes_to_read(RULE_CODES, DEFAULT_THRESHOLDS)
    assert set(everything) == RULE_CODES


def spo2(at: datetime, value: float) -> dict[str, Any]:
    return reading(f"spo2-{stamp(at)}", "oxygen-saturation", value, "%", at)


async def test_two_processes_ingesting_one_patient_raise_each_alert_once(
    database: Database, world: World
) -> None:
    """Two processes (each its own cached states) split one patient's batches and judge them
    at once: one alert raised, re-triggered by both, resolved once; the state holds every
    reading, whichever process stored it last."""
    clock = FrozenClock(BASE_TIME + timedelta(hours=1))
    first, second = await start(database, clock), await start(database, clock)
    low = [spo2(BASE_TIME + i * 30 * timedelta(seconds=1), 86) for i in range(30)]
    back = [spo2(BASE_TIME + 15 * MINUTE + i * MINUTE, 97) for i in range(12)]
    try:
        for round_ in (low, back):
            await asyncio.gather(
                *(
                    (first if i % 2 else second).send(world.device_id, [item])
                    for i, item in enumerate(round_)
                )
            )
    finally:
        await first.stop()
        await second.stop()
    alerts = await _alerts(database, world.patient_id)
    assert [(a.rule, a.status) for a in alerts] == [("spo2-low", AlertStatus.RESOLVED)]
    version, state = await _loaded(database, world.patient_id)
    assert version == len(low) + len(back)  # one write a batch, none lost
    assert len(state) == len(low) + len(back)


async def _loaded(database: Database, patient_id: str) -> tuple[int, RuleState]:
    """The patient's stored state as a restarted process loads it, with its version."""
    async with database.read() as conn:
        stored = await RuleStates(conn).head(patient_id)
        assert stored is not None
        version, data = stored
        head = Head.decode(data)
        assert head is not None
        return version, RuleState.load(
            patient_id, head, await RuleStates(conn).segments(patient_id)
        )


@pytest.mark.parametrize("incremental", [True, False], ids=["state", "history"])
async def test_a_batch_is_judged_with_what_another_process_committed_and_has_not_judged(
    database: Database, world: World, incremental: bool
) -> None:
    """Another process has committed a patient's readings and not judged them yet (it is slow,
    or its round is long); a batch judged here sees them, as judging from the stored history
    does: ten minutes back at 97 % after the desaturation resolve the alert at the next
    reading. (Before, the state held judged readings only, and the alert stayed open.)"""
    clock = FrozenClock(BASE_TIME + timedelta(hours=1))
    judging = await start(database, clock, incremental=incremental)
    slow = IngestPipeline(database, clock=clock)  # its after-commit worker never runs
    slow.on_committed(RuleEngine(database, InProcessBus(), clock).on_committed)
    try:
        await judging.send(
            world.device_id,
            [spo2(BASE_TIME + i * 30 * timedelta(seconds=1), 86) for i in range(30)],
        )
        [raised] = await _alerts(database, world.patient_id)
        assert raised.status == AlertStatus.OPEN
        back = [spo2(BASE_TIME + 15 * MINUTE + i * MINUTE, 97) for i in range(10)]
        result = await slow.ingest(
            world.device_id, "http", parse_body(orjson.dumps({"readings": back}), 1000)
        )
        assert len(result.stored) == len(back)
        await judging.send(world.device_id, [spo2(BASE_TIME + 25 * MINUTE, 97)])
    finally:
        await judging.stop()
    [alert] = await _alerts(database, world.patient_id)
    assert (alert.rule, alert.status) == ("spo2-low", AlertStatus.RESOLVED)
    assert alert.resolved_at == clock.at


async def test_a_restart_in_a_sustained_spo2_window_still_raises_the_alert_on_time(
    database: Database, world: World
) -> None:
    clock = FrozenClock(BASE_TIME)
    before = await start(database, clock)
    try:
        for minute in range(3):
            clock.at = BASE_TIME + minute * MINUTE + timedelta(seconds=30)
            await before.send(world.device_id, [spo2(BASE_TIME + minute * MINUTE, 86)])
    finally:
        await before.stop()
    assert await _alerts(database, world.patient_id) == []
    after = await start(database, clock)  # a new process: nothing cached
    try:
        for minute in range(3, 8):
            clock.at = BASE_TIME + minute * MINUTE + timedelta(seconds=30)
            await after.send(world.device_id, [spo2(BASE_TIME + minute * MINUTE, 86)])
    finally:
        await after.stop()
    [alert] = await _alerts(database, world.patient_id)
    assert alert.rule == "spo2-low"
    # Raised by the reading that completed five minutes below 90 %, not later.
    assert alert.opened_at == BASE_TIME + 5 * MINUTE + timedelta(seconds=30)
    assert alert.trigger_count == 3


async def test_erasure_deletes_the_rule_state_and_a_copy_of_it_no_longer_opens(
    database_url: str, tmp_path: Path
) -> None:
    keyed = keyed_database(database_url, tmp_path / "keys")
    try:
        world = await make_world(keyed)
        clock = FrozenClock(BASE_TIME + timedelta(hours=1))
        process = await start(keyed, clock)
        try:
            await process.send(world.device_id, [spo2(BASE_TIME, 95)])
        finally:
            await process.stop()
        query = select(rule_state_segments).where(
            rule_state_segments.c.patient_id == world.patient_id
        )
        async with keyed.read() as conn:
            [copied] = (await conn.execute(query)).mappings().all()
            assert await RuleStates(conn).segments(world.patient_id) != []  # opens before

        await erase_patient(keyed, world.patient_id, reason="request", requested_by="dpo")

        async with keyed.read() as conn:
            assert (await conn.execute(query)).first() is None
            heads = select(rule_states).where(rule_states.c.patient_id == world.patient_id)
            assert (await conn.execute(heads)).first() is None
        with pytest.raises(DataKeyDestroyed):
            key = await keyed.cipher.key(world.patient_id)
            key.open(copied["state"], "rule_state_segments.state", world.patient_id)
        assert b"readings" not in copied["state"]  # sealed, not stored in the clear
    finally:
        await keyed.dispose()


async def test_a_rounds_states_stored_together_are_each_what_was_put(
    database: Database,
) -> None:
    """A round stores its patients' states in one call: each patient's head, version and
    segments read back as if stored alone (a new patient's, an appended minute, minutes
    dropped behind the horizon, a minute rewritten whole, a full rewrite)."""
    a, b, c = [
        (
            await provisioning.create_patient(
                database, family=f"R{n}", given="S", identifier=f"RS-{n}"
            )
        ).id
        for n in range(3)
    ]
    m0, m1, m2 = DAY, DAY + MINUTE, DAY + 2 * MINUTE

    def part(bucket: datetime, data: bytes, whole: bool = False) -> SegmentWrite:
        return SegmentWrite(bucket, data, whole)

    async def put(*puts: StatePut) -> dict[str, int]:
        async with database.write() as conn:
            return await RuleStates(conn).put_many(list(puts), DAY)

    async def stored(patient_id: str, after: int = 0) -> tuple[Any, list[bytes]]:
        async with database.read() as conn:
            states = RuleStates(conn)
            return await states.head(patient_id), await states.segments(patient_id, after)

    assert await put(
        StatePut(a, b"a-head-1", [part(m0, b"a0"), part(m1, b"a1"), part(m2, b"a2")], None),
        StatePut(b, b"b-head-1", [part(m0, b"b0"), part(m1, b"b1")], None),
    ) == {a: 1, b: 1}
    assert await put(
        StatePut(a, b"a-head-2", [part(m2, b"a2-whole", whole=True)], 1, drop_before=m1),
        StatePut(b, b"b-head-2", [part(m1, b"b1-more")], 1),
        StatePut(c, b"c-head-1", [part(m0, b"c0")], None),
    ) == {a: 2, b: 2, c: 1}
    assert await stored(a) == ((2, b"a-head-2"), [b"a1", b"a2-whole"])
    assert await stored(b) == ((2, b"b-head-2"), [b"b0", b"b1", b"b1-more"])
    assert await stored(b, after=1) == ((2, b"b-head-2"), [b"b1-more"])
    assert await stored(c) == ((1, b"c-head-1"), [b"c0"])
    assert await put(
        StatePut(b, b"b-head-3", [part(m2, b"b-all", whole=True)], 2, replace_all=True)
    ) == {b: 3}
    assert await stored(b) == ((3, b"b-head-3"), [b"b-all"])
    assert await stored(a) == ((2, b"a-head-2"), [b"a1", b"a2-whole"])


async def start_in_rounds(database: Database, clock: FrozenClock) -> Process:
    """A process whose after-commit worker is started only once a group of batches has been
    committed, so the whole group is judged as one round (`on_committed_round`)."""
    pipeline = IngestPipeline(database, clock=clock)
    engine = RuleEngine(database, InProcessBus(), clock, held=pipeline.after_commit.held)
    pipeline.on_committed_round(engine.on_committed_round)
    return Process(pipeline, engine)


@pytest.mark.parametrize("name", sorted(MODELS))
async def test_judging_queued_batches_together_raises_exactly_the_alerts_of_judging_each_alone(
    database: Database, name: str
) -> None:
    """The same recorded stream judged batch by batch (old full-window path and incremental
    path) and in rounds of 1 to 6 queued batches (one transaction a round), with a late batch
    and a care plan changed midway: every alert the same."""
    model, start_at, overrides = MODELS[name]
    items = model.readings_between(start_at, start_at + timedelta(hours=5))
    worlds = [await make_world(database, f"MRN-ROUND-{n}") for n in range(3)]
    clock = FrozenClock(start_at)
    old = await start(database, clock, incremental=False)
    alone = await start(database, clock)
    rounds = await start_in_rounds(database, clock)
    batches = _batches(items)
    sizes = [3, 1, 6, 2, 5, 4]
    groups: list[list[list[dict[str, Any]]]] = []
    while batches:
        size = sizes[len(groups) % len(sizes)]
        groups.append(batches[:size])
        batches = batches[size:]
    try:
        for index, group in enumerate(groups):
            if index == len(groups) // 2:
                for world in worlds:
                    plan = CarePlan(world.patient_id, {**overrides, "news2_max_age_minutes": 90})
                    async with database.write() as conn:
                        await CarePlans(conn).put(plan, clock.at, "dr plan")
            newest = max(_time(item) for batch in group for item in batch)
            clock.at = max(clock.at, newest + timedelta(seconds=30))
            for batch in group:
                await old.send(worlds[0].device_id, batch)
                await alone.send(worlds[1].device_id, batch)
            for batch in group:  # committed, queued, not judged yet
                result = await rounds.pipeline.ingest(
                    worlds[2].device_id,
                    "http",
                    parse_body(orjson.dumps({"readings": batch}), 1000),
                )
                assert not result.rejected
            await rounds.pipeline.after_commit.start()
            await rounds.pipeline.after_commit.stop()  # judges the queued round first
    finally:
        await old.stop()
        await alone.stop()
    expected = [_judged(a) for a in await _alerts(database, worlds[0].patient_id)]
    assert expected, "the stream raises alerts"
    assert [_judged(a) for a in await _alerts(database, worlds[1].patient_id)] == expected
    assert [_judged(a) for a in await _alerts(database, worlds[2].patient_id)] == expected
    # Stored once a round, the state a restarted process loads holds what the one stored
    # batch by batch holds, from the later of their horizons (each trims on its own beat).
    (_, by_batch), (version, by_round) = [await _loaded(database, w.patient_id) for w in worlds[1:]]
    since, until = max(by_batch.horizon, by_round.horizon), DAY + timedelta(days=400)
    codes = sorted(RULE_CODES)
    kept = sorted((p.at, p.value) for p in by_round.window(since, until)(codes))
    assert kept and kept == sorted((p.at, p.value) for p in by_batch.window(since, until)(codes))
    assert version == len(groups)  # one write a round
