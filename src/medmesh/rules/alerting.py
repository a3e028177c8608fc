"""Turning rule outcomes into alert rows: one active alert per dedupe key, re-triggers counted
on it, auto-resolution when the condition cleared. Runs inside the caller's transaction, with
the patient locked; the caller publishes the returned changes after the commit."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime

from medmesh.domain.alerts import CONDITION_CLEARED, SYSTEM_ACTOR, Alert, AlertStatus
from medmesh.rules.outcomes import Cleared, Finding, Outcome
from medmesh.store.alerts import Alerts

_ACTIVE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


def _opened(patient_id: str, finding: Finding, now: datetime) -> Alert:
    return Alert(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        rule=finding.rule,
        dedupe_key=finding.dedupe_key,
        severity=finding.severity,
        status=AlertStatus.OPEN,
        title=finding.title,
        detail=finding.detail,
        device_id=finding.device_id,
        observation_id=finding.observation_id,
        opened_at=now,
        last_triggered_at=finding.at,
        trigger_count=1,
    )


def _retriggered(alert: Alert, finding: Finding) -> Alert:
    """The alert with newer evidence; its severity never drops while it is active."""
    return dataclasses.replace(
        alert,
        severity=max(alert.severity, finding.severity, key=lambda s: s.rank),
        title=finding.title,
        detail=finding.detail,
        device_id=finding.device_id,
        observation_id=finding.observation_id,
        last_triggered_at=finding.at,
        trigger_count=alert.trigger_count + 1,
    )


async def apply_outcomes(
    alerts: Alerts,
    patient_id: str,
    outcomes: Sequence[Outcome],
    now: datetime,
    active: dict[str, Alert] | None = None,
) -> list[Alert]:
    """Store what the outcomes change; returns the changed alerts as stored.

    `active` is the patient's active alerts by dedupe key, as a caller judging several
    batches in one transaction read them once (`Alerts.active_for_patients`); it is kept
    up to date here for the next batch. Without it they are read now. A clinician may
    acknowledge or resolve an alert after it was read (acknowledging does not wait for the
    patient's lock): the change that finds the alert no longer as read reads the patient's
    active alerts again and is applied to what is stored.

    A finding no newer than the alert's last evidence changes nothing, so evaluating the same
    readings or the same day again is harmless.
    """
    if active is None:
        active = await alerts.active_for_patient(patient_id)
    changed: list[Alert] = []
    for outcome in outcomes:
        if not await _apply(alerts, patient_id, outcome, now, active, changed):
            fresh = await alerts.active_for_patient(patient_id)
            active.clear()
            active.update(fresh)
            # Changed again meanwhile: left to the next batch, which reads it afresh.
            await _apply(alerts, patient_id, outcome, now, active, changed)
    # Read back: a clinician may have acknowledged one meanwhile (the updates name only
    # their own columns), and events must carry what is stored.
    stored = [await alerts.get(alert.id) for alert in changed]
    for alert in stored:  # as the round's next batch must find them
        if alert.status in _ACTIVE:
            active[alert.dedupe_key] = alert
        elif (kept := active.get(alert.dedupe_key)) is not None and kept.id == alert.id:
            del active[alert.dedupe_key]  # resolved by a clinician meanwhile
    return stored


async def _apply(
    alerts: Alerts,
    patient_id: str,
    outcome: Outcome,
    now: datetime,
    active: dict[str, Alert],
    changed: list[Alert],
) -> bool:
    """Apply one outcome to the patient's `active` alerts and store it; False when the
    alert it changes is no longer as `active` holds it (nothing stored, `active` as it was)."""
    current = active.get(outcome.dedupe_key)
    if isinstance(outcome, Cleared):
        if current is None:
            return True
        resolved = current.resolve(SYSTEM_ACTOR, now, CONDITION_CLEARED)
        if not await alerts.transition(resolved, expected=current.status):
            return False
        del active[outcome.dedupe_key]
        changed.append(resolved)
    elif current is None:
        opened = _opened(patient_id, outcome, now)
        await alerts.add(opened)
        active[outcome.dedupe_key] = opened
        changed.append(opened)
    elif outcome.at > current.last_triggered_at:
        updated = _retriggered(current, outcome)
        if not await alerts.retrigger(updated):
            return False
        active[outcome.dedupe_key] = updated
        changed.append(updated)
    return True
