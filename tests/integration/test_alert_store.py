"""The alert and care plan repositories on both backends."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from medmesh import provisioning
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.care_plans import CarePlan, Schedule
from medmesh.domain.errors import NotFound
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from tests.conftest import World
from tests.helpers import BASE_TIME


def alert(patient_id: str, n: int, severity: Severity, status: AlertStatus) -> Alert:
    return Alert(
        id=f"alert-{patient_id[:8]}-{n}",
        patient_id=patient_id,
        rule=f"rule-{n}",
        dedupe_key=f"rule-{n}:{patient_id}",
        severity=severity,
        status=status,
        title="t",
        detail="d",
        device_id=None,
        observation_id=None,
        opened_at=BASE_TIME + timedelta(minutes=n),
        last_triggered_at=BASE_TIME + timedelta(minutes=n),
        trigger_count=1,
    )


async def test_open_counts_give_the_number_and_highest_severity_of_unresolved_alerts(
    database: Database, world: World
) -> None:
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    async with database.write() as conn:
        alerts = Alerts(conn)
        await alerts.add(alert(world.patient_id, 1, Severity.WARNING, AlertStatus.OPEN))
        await alerts.add(alert(world.patient_id, 2, Severity.URGENT, AlertStatus.ACKNOWLEDGED))
        await alerts.add(alert(world.patient_id, 3, Severity.CRITICAL, AlertStatus.RESOLVED))
        await alerts.add(alert(other.id, 1, Severity.INFO, AlertStatus.RESOLVED))
    async with database.read() as conn:
        counts = await Alerts(conn).open_counts_by_patient()
    assert counts == {world.patient_id: (2, Severity.URGENT)}


async def test_search_is_newest_first_by_status_with_paging(
    database: Database, world: World
) -> None:
    async with database.write() as conn:
        for n, status in enumerate([AlertStatus.OPEN, AlertStatus.RESOLVED, AlertStatus.OPEN]):
            await Alerts(conn).add(alert(world.patient_id, n, Severity.WARNING, status))
    async with database.read() as conn:
        alerts = Alerts(conn)
        everything = await alerts.search(world.patient_id)
        open_ones = await alerts.search(statuses=[AlertStatus.OPEN])
        second = await alerts.search(world.patient_id, limit=1, offset=1)
        with pytest.raises(NotFound):
            await alerts.get("nope")
    assert [a.rule for a in everything] == ["rule-2", "rule-1", "rule-0"]
    assert [a.rule for a in open_ones] == ["rule-2", "rule-0"]
    assert [a.rule for a in second] == ["rule-1"]
    assert everything[0] == alert(world.patient_id, 2, Severity.WARNING, AlertStatus.OPEN)


async def test_a_transition_is_refused_when_the_alert_changed_meanwhile(
    database: Database, world: World
) -> None:
    stored = alert(world.patient_id, 1, Severity.URGENT, AlertStatus.OPEN)
    async with database.write() as conn:
        alerts = Alerts(conn)
        await alerts.add(stored)
        assert await alerts.transition(stored.acknowledge("a", BASE_TIME), AlertStatus.OPEN)
        late = stored.acknowledge("b", BASE_TIME)
        assert not await alerts.transition(late, AlertStatus.OPEN)
        assert (await alerts.get(stored.id)).acknowledged_by == "a"


async def test_a_care_plan_round_trips_and_a_patient_without_one_has_the_defaults(
    database: Database, world: World
) -> None:
    plan = CarePlan(
        world.patient_id,
        {"spo2_low": 88.0},
        Schedule({"blood-pressure": 2}, "Europe/London"),
        "dr a",
        "dr b",
    )
    async with database.write() as conn:
        await CarePlans(conn).put(plan, BASE_TIME, "dr a")
    async with database.read() as conn:
        plans = CarePlans(conn)
        stored = await plans.get(world.patient_id)
        scheduled = await plans.scheduled()
        nobody = await plans.get("nobody")
    assert stored == dataclasses.replace(plan, updated_at=BASE_TIME, updated_by="dr a")
    assert scheduled == [stored]
    assert nobody == CarePlan("nobody")
