"""Rules and alerts on both backends, driven through the real ingest pipeline and its
after-commit listener, with a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from medmesh import provisioning
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.care_plans import CarePlan, Schedule
from medmesh.events.bus import InProcessBus, Subscription
from medmesh.events.model import ALERT
from medmesh.ingest.after_commit import AfterCommit
from medmesh.ingest.native import parse_body
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.rules.engine import RuleEngine
from medmesh.rules.escalation import escalate_overdue
from medmesh.rules.periodic import run_checks
from medmesh.sim.models import CopdPatient
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from medmesh.testing import FrozenClock
from tests.conftest import World
from tests.helpers import BASE_TIME, reading, stamp

MINUTE = timedelta(minutes=1)


@dataclass
class Monitor:
    """A patient's device feeding the pipeline, with the rules listening."""

    database: Database
    pipeline: IngestPipeline
    bus: InProcessBus
    events: Subscription
    clock: FrozenClock
    world: World

    async def send(self, *readings: dict[str, Any], device_id: str | None = None) -> None:
        """One batch; the clock moves to just after its newest reading."""
        newest = max(datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in readings)
        self.clock.at = max(self.clock.at, newest + timedelta(seconds=30))
        batch = parse_body(orjson.dumps({"readings": list(readings)}), 1000)
        result = await self.pipeline.ingest(device_id or self.world.device_id, "http", batch)
        assert not result.rejected
        await self.pipeline.after_commit.settled()  # the rules run after the acknowledgement

    async def alerts(self, rule: str | None = None) -> list[Alert]:
        async with self.database.read() as conn:
            found = await Alerts(conn).search(self.world.patient_id)
        return sorted((a for a in found if rule in (None, a.rule)), key=lambda a: a.opened_at)

    def alert_events(self) -> list[dict[str, Any]]:
        drained = []
        while True:
            try:
                event = self.events._queue.get_nowait()
            except asyncio.QueueEmpty:
                return drained
            if event.kind == ALERT:
                drained.append(event.data)

    async def care_plan(self, plan: CarePlan, at: datetime = BASE_TIME - timedelta(days=7)) -> None:
        async with self.database.write() as conn:
            await CarePlans(conn).put(plan, at, "dr plan")


@pytest.fixture
async def monitor(database: Database, world: World) -> AsyncIterator[Monitor]:
    clock = FrozenClock(BASE_TIME)
    pipeline = IngestPipeline(database, clock=clock)
    bus = InProcessBus()
    events = bus.subscribe(100_000)
    pipeline.on_committed(RuleEngine(database, bus, clock).on_committed)
    await pipeline.after_commit.start()
    yield Monitor(database, pipeline, bus, events, clock, world)
    await pipeline.after_commit.stop()


def spo2(at: datetime, value: float) -> dict[str, Any]:
    return reading(f"spo2-{stamp(at)}", "oxygen-saturation", value, "%", at)


def glucose(at: datetime, value: float) -> dict[str, Any]:
    return reading(f"bg-{stamp(at)}", "blood-glucose", value, "mg/dL", at)


def blood_pressure(at: datetime, systolic: float, diastolic: float) -> dict[str, Any]:
    value = {"systolic": systolic, "diastolic": diastolic}
    return reading(f"bp-{stamp(at)}", "blood-pressure", value, "mm[Hg]", at)


async def send_spo2_minutely(monitor: Monitor, start: datetime, values: Sequence[float]) -> None:
    for i, value in enumerate(values):
        await monitor.send(spo2(start + i * MINUTE, value))


# A simulated COPD patient (seed 112) whose day has two desaturation episodes, around 13:55 and
# 14:53 UTC, deep and long enough to alert on a COPD care plan (BTS target 88-92 %).
COPD_SEED = 112
COPD_DAY = datetime(2026, 11, 24, tzinfo=UTC)
COPD_PLAN = {"spo2_low": 88, "spo2_clear": 90}


async def test_each_copd_desaturation_raises_one_alert_that_resolves_after_recovery(
    monitor: Monitor, world: World
) -> None:
    await monitor.care_plan(CarePlan(world.patient_id, COPD_PLAN))
    model = CopdPatient("copd", seed=COPD_SEED)
    start, end = (
        COPD_DAY + timedelta(hours=13, minutes=30),
        COPD_DAY + timedelta(hours=15, minutes=30),
    )
    for item in model.readings_between(start, end):
        if item["type"] == "oxygen-saturation":
            await monitor.send(item)

    alerts = await monitor.alerts("spo2-low")
    assert len(alerts) == 2
    for alert in alerts:
        assert alert.status is AlertStatus.RESOLVED
        assert (alert.resolved_by, alert.resolution) == ("medmesh", "condition cleared")
        depth, _ = model.desaturation(alert.last_triggered_at)
        assert depth > 0, "the last evidence falls inside a simulated episode"
    assert alerts[0].resolved_at is not None and alerts[0].resolved_at < alerts[1].opened_at
    events = [e for e in monitor.alert_events() if e["rule"] == "spo2-low"]
    assert [e["status"] for e in events if e["status"] != "open"] == ["resolved", "resolved"]


async def test_spo2_hovering_at_89_to_91_raises_one_alert_not_a_storm(monitor: Monitor) -> None:
    hovering = [89, 89, 89, 89, 89, 89, 90, 91] * 5  # 40 minutes, never 92
    await send_spo2_minutely(monitor, BASE_TIME, hovering)

    (alert,) = await monitor.alerts()
    assert alert.rule == "spo2-low" and alert.status is AlertStatus.OPEN
    assert alert.trigger_count == 5  # each 5-minute spell below 90 re-triggered it
    assert alert.last_triggered_at == BASE_TIME + 37 * MINUTE
    assert alert.opened_at == BASE_TIME + 5 * MINUTE + timedelta(seconds=30)
    assert len(monitor.alert_events()) == 5


async def test_a_rising_severity_updates_the_open_alert_until_glucose_recovers(
    monitor: Monitor,
) -> None:
    await monitor.send(glucose(BASE_TIME, 65))
    await monitor.send(glucose(BASE_TIME + 10 * MINUTE, 50))
    await monitor.send(glucose(BASE_TIME + 20 * MINUTE, 75))  # between 70 and 80: still low
    (alert,) = await monitor.alerts()
    assert alert.severity is Severity.CRITICAL and alert.status is AlertStatus.OPEN
    assert alert.trigger_count == 2
    assert "50 mg/dL" in alert.detail

    await monitor.send(glucose(BASE_TIME + 30 * MINUTE, 85))
    (alert,) = await monitor.alerts()
    assert alert.status is AlertStatus.RESOLVED and alert.resolution == "condition cleared"


async def test_the_same_condition_from_concurrent_batches_opens_one_alert(
    monitor: Monitor,
) -> None:
    monitor.clock.at = BASE_TIME + 10 * MINUTE
    await asyncio.gather(*(monitor.send(glucose(BASE_TIME + i * MINUTE, 45)) for i in range(6)))
    (alert,) = await monitor.alerts()
    assert alert.rule == "glucose-low" and alert.trigger_count >= 1


async def test_partial_news2_uses_the_systolic_pressure_of_the_blood_pressure_panel(
    monitor: Monitor,
) -> None:
    at = BASE_TIME
    await monitor.send(
        reading("rr", "respiratory-rate", 22, "/min", at),  # 2
        spo2(at, 93),  # 2
        reading("hr", "heart-rate", 95, "/min", at),  # 1
        blood_pressure(at, 100, 60),  # systolic 100: 2
    )
    (alert,) = await monitor.alerts("news2")
    assert alert.severity is Severity.CRITICAL
    assert alert.title == "NEWS2 7 (partial)"
    assert "not measured: temperature, consciousness, supplemental oxygen" in alert.detail


async def test_a_device_that_stops_reporting_is_flagged_by_the_periodic_check(
    monitor: Monitor, world: World
) -> None:
    await monitor.send(reading("hr-1", "heart-rate", 70, "/min", BASE_TIME))
    heard = monitor.clock.at
    assert await run_checks(monitor.database, monitor.bus, heard + 59 * MINUTE) == []

    (stale,) = await run_checks(monitor.database, monitor.bus, heard + 61 * MINUTE)
    assert (stale.rule, stale.device_id, stale.severity) == (
        "device-stale",
        world.device_id,
        Severity.WARNING,
    )
    assert stale.last_triggered_at == heard
    assert await run_checks(monitor.database, monitor.bus, heard + 3 * 60 * MINUTE) == []

    await monitor.send(reading("hr-2", "heart-rate", 70, "/min", BASE_TIME + 3 * 60 * MINUTE))
    (alert,) = await monitor.alerts("device-stale")
    assert alert.status is AlertStatus.RESOLVED and alert.trigger_count == 1


async def test_a_day_with_fewer_blood_pressure_readings_than_scheduled_is_flagged(
    monitor: Monitor, world: World
) -> None:
    await monitor.care_plan(CarePlan(world.patient_id, schedule=Schedule({"blood-pressure": 2})))
    day = BASE_TIME.replace(hour=0)
    await monitor.send(blood_pressure(day + timedelta(hours=8), 128, 82))
    next_morning = day + timedelta(days=1, hours=6)

    (missed,) = await run_checks(monitor.database, monitor.bus, next_morning)
    assert missed.rule == "missed-readings"
    assert missed.detail == (
        "1 of 2 blood pressure panel with all children optional readings on 2026-11-24"
    )
    assert await run_checks(monitor.database, monitor.bus, next_morning + 60 * MINUTE) == []

    for hour in (8, 20):
        await monitor.send(blood_pressure(day + timedelta(days=1, hours=hour), 126, 80))
    (cleared,) = await run_checks(monitor.database, monitor.bus, day + timedelta(days=2, hours=6))
    assert cleared.id == missed.id and cleared.status is AlertStatus.RESOLVED


async def test_an_unacknowledged_urgent_alert_escalates_once_after_the_timeout(
    monitor: Monitor, world: World
) -> None:
    await monitor.care_plan(CarePlan(world.patient_id, escalation_clinician="dr on call"))
    await monitor.send(blood_pressure(BASE_TIME, 192, 104))
    (crisis,) = await monitor.alerts()
    assert crisis.severity is Severity.URGENT and crisis.escalation_level == 0
    monitor.alert_events()

    assert await run_checks(monitor.database, monitor.bus, crisis.opened_at + 14 * MINUTE) == []
    later = crisis.opened_at + 15 * MINUTE
    (escalated,) = await run_checks(monitor.database, monitor.bus, later)
    assert (escalated.escalation_level, escalated.escalated_at) == (1, later)
    (event,) = monitor.alert_events()
    assert event["id"] == crisis.id and event["escalation_level"] == 1
    assert await escalate_overdue(monitor.database, monitor.bus, later + 60 * MINUTE) == []


async def test_an_acknowledged_alert_does_not_escalate(monitor: Monitor) -> None:
    from medmesh.rules.lifecycle import acknowledge

    await monitor.send(glucose(BASE_TIME, 40))
    (alert,) = await monitor.alerts()
    await acknowledge(monitor.database, monitor.bus, alert.id, "dr a", at=alert.opened_at)
    assert await run_checks(monitor.database, monitor.bus, alert.opened_at + 60 * MINUTE) == []


async def test_a_patient_without_devices_or_plan_raises_nothing_on_the_clock(
    database: Database,
) -> None:
    await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-9")
    assert await run_checks(database, InProcessBus(), BASE_TIME + timedelta(days=3)) == []


async def test_a_reading_is_acknowledged_before_the_rules_have_judged_it(
    database: Database, world: World
) -> None:
    judging = asyncio.Event()
    release = asyncio.Event()

    async def slow_rules(readings: Sequence[Any]) -> None:
        judging.set()
        await release.wait()

    pipeline = IngestPipeline(database)
    pipeline.on_committed(slow_rules)
    await pipeline.after_commit.start()
    batch = parse_body(orjson.dumps({"readings": [glucose(BASE_TIME, 45)]}), 1000)
    result = await pipeline.ingest(world.device_id, "http", batch)  # returns: rules still pending
    assert len(result.stored) == 1
    await asyncio.wait_for(judging.wait(), 10)
    release.set()
    await pipeline.after_commit.stop()


async def test_readings_committed_by_a_process_that_died_before_its_rules_ran_are_judged_on_restart(
    database: Database, world: World
) -> None:
    clock = FrozenClock(BASE_TIME + MINUTE)
    bus = InProcessBus()
    # The first process commits an urgent low glucose and dies before its after-commit worker
    # runs: the batch is stored, acknowledged, and not yet judged.
    crashed = IngestPipeline(database, clock=clock)
    crashed.on_committed(RuleEngine(database, bus, clock).on_committed)
    batch = parse_body(orjson.dumps({"readings": [glucose(BASE_TIME, 45)]}), 1000)
    assert len((await crashed.ingest(world.device_id, "http", batch)).stored) == 1
    async with database.read() as conn:
        assert await Alerts(conn).search(world.patient_id) == []

    restarted = AfterCommit(database, recover_after=timedelta(0), clock=clock)
    restarted.add(RuleEngine(database, bus, clock).on_committed)
    assert await restarted.recover() == 1
    async with database.read() as conn:
        (alert,) = await Alerts(conn).search(world.patient_id)
    assert alert.rule == "glucose-low" and alert.severity is Severity.CRITICAL
    assert await restarted.recover() == 0, "a judged batch is not judged again"
