"""Rule outcomes stored as alerts when a clinician changed the alert after the rules read it.

A round of the rule engine reads its patients' active alerts once, at its start, and judges
every batch of the round against them (`RuleEngine.on_committed_round`). Acknowledging or
resolving does not wait for the patient's lock, so a clinician can change an alert between
that read and the batch that changes it. Each case below reads the alerts, lets a clinician
act (committed, through the same lifecycle as the API), then applies the outcome with what
was read, on both backends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from medmesh import provisioning
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.events.bus import InProcessBus
from medmesh.rules import lifecycle
from medmesh.rules.alerting import apply_outcomes
from medmesh.rules.outcomes import Cleared, Finding, Outcome
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from tests.conftest import World
from tests.helpers import BASE_TIME

RULE = "spo2-low"


def _finding(patient_id: str, minutes: int) -> Finding:
    return Finding(
        rule=RULE,
        dedupe_key=f"{RULE}:{patient_id}",
        severity=Severity.URGENT,
        title="SpO2 low",
        detail="SpO2 88 % for 5 min",
        at=BASE_TIME + timedelta(minutes=minutes),
    )


async def _apply(
    database: Database, patient_id: str, outcomes: list[Outcome], active: dict[str, Alert]
) -> list[Alert]:
    async with database.write() as conn:
        return await apply_outcomes(
            Alerts(conn), patient_id, outcomes, BASE_TIME + timedelta(minutes=30), active
        )


async def _read(database: Database, patient_id: str) -> dict[str, Alert]:
    async with database.read() as conn:
        return (await Alerts(conn).active_for_patients([patient_id]))[patient_id]


async def _all(database: Database, patient_id: str) -> list[Alert]:
    async with database.read() as conn:
        return await Alerts(conn).search(patient_id=patient_id)


async def _read_then_acted_on(
    database: Database, patient: str, act: Callable[[str], Awaitable[Alert]]
) -> tuple[Alert, dict[str, Alert]]:
    """An alert opened; the patient's active alerts read, as a round's start reads them; then
    a clinician's `act` on the alert, committed."""
    (opened,) = await _apply(database, patient, [_finding(patient, 1)], {})
    active = await _read(database, patient)
    await act(opened.id)
    return opened, active


def _acknowledge(database: Database) -> Callable[[str], Awaitable[Alert]]:
    return lambda alert_id: lifecycle.acknowledge(database, InProcessBus(), alert_id, "dr-lee")


async def test_a_condition_that_clears_resolves_an_alert_acknowledged_since_it_was_read(
    database: Database, world: World
) -> None:
    patient = world.patient_id
    _, active = await _read_then_acted_on(database, patient, _acknowledge(database))

    (changed,) = await _apply(database, patient, [Cleared(f"{RULE}:{patient}")], active)

    (stored,) = await _all(database, patient)
    assert stored.status is AlertStatus.RESOLVED
    assert stored.acknowledged_by == "dr-lee"  # the acknowledgement is kept
    assert changed == stored
    assert active == {}  # what the round's next batch is judged against


async def test_a_finding_after_a_clinician_resolved_the_alert_opens_a_new_one(
    database: Database, world: World
) -> None:
    patient = world.patient_id
    first, active = await _read_then_acted_on(
        database,
        patient,
        lambda alert_id: lifecycle.resolve(
            database, InProcessBus(), alert_id, "dr-lee", "seen at the bedside"
        ),
    )

    (changed,) = await _apply(database, patient, [_finding(patient, 2)], active)

    assert changed.id != first.id
    assert changed.status is AlertStatus.OPEN
    assert changed.last_triggered_at == BASE_TIME + timedelta(minutes=2)
    stored = {a.id: a for a in await _all(database, patient)}
    assert stored[first.id].status is AlertStatus.RESOLVED
    assert stored[first.id].resolved_by == "dr-lee"
    assert stored[changed.id].status is AlertStatus.OPEN
    assert active == {f"{RULE}:{patient}": stored[changed.id]}


async def test_a_retrigger_of_an_alert_acknowledged_since_it_was_read_keeps_it_acknowledged(
    database: Database, world: World
) -> None:
    patient = world.patient_id
    opened, active = await _read_then_acted_on(database, patient, _acknowledge(database))

    (changed,) = await _apply(database, patient, [_finding(patient, 2)], active)

    assert changed.id == opened.id
    assert changed.status is AlertStatus.ACKNOWLEDGED
    assert changed.trigger_count == 2
    # The next batch of the round sees it acknowledged, as stored: its clearing resolves it.
    assert active[f"{RULE}:{patient}"].status is AlertStatus.ACKNOWLEDGED
    await _apply(database, patient, [Cleared(f"{RULE}:{patient}")], active)
    (stored,) = await _all(database, patient)
    assert stored.status is AlertStatus.RESOLVED


async def test_the_active_alerts_of_several_patients_are_read_together(
    database: Database, world: World
) -> None:
    patient = world.patient_id
    second_patient = (
        await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    ).id
    (opened,) = await _apply(database, patient, [_finding(patient, 1)], {})
    (other,) = await _apply(database, second_patient, [_finding(second_patient, 1)], {})
    await lifecycle.resolve(database, InProcessBus(), other.id, "dr-lee", "seen")

    async with database.read() as conn:
        found = await Alerts(conn).active_for_patients([patient, second_patient, "no-such"])

    assert found == {
        patient: {opened.dedupe_key: opened},
        second_patient: {},
        "no-such": {},
    }
