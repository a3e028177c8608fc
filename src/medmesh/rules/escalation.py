"""Escalation: an urgent or critical alert nobody acknowledged in time goes to the care plan's
escalation clinician. The alert records the level and time; the ALERT event carries it to the
dashboard and webhooks, which reach the clinician."""

from __future__ import annotations

from datetime import datetime

from medmesh.domain.alerts import Alert, Severity
from medmesh.events.bus import EventBus
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.notify import publish_alerts
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database

ESCALATED = (Severity.URGENT, Severity.CRITICAL)


async def escalate_overdue(database: Database, bus: EventBus, now: datetime) -> list[Alert]:
    """Escalate (level 0 → 1) each open urgent or critical alert older than the patient's
    `escalate_urgent_minutes` / `escalate_critical_minutes`; returns the escalated alerts.

    Safe to run in several processes at once: the update names the level it raises, so only
    one process escalates an alert, and only that one publishes. One short transaction an
    alert, so it never holds one alert's row while waiting for another's.
    """
    async with database.read() as conn:
        waiting = await Alerts(conn).awaiting_escalation(ESCALATED)
        plans = await CarePlans(conn).for_patients(sorted({a.patient_id for a in waiting}))
    escalated: list[Alert] = []
    for alert in waiting:
        t = thresholds_for(plans.get(alert.patient_id))
        name = (
            "escalate_critical_minutes"
            if alert.severity is Severity.CRITICAL
            else "escalate_urgent_minutes"
        )
        if now - alert.opened_at < t.minutes(name):
            continue
        async with database.write() as conn:
            alerts = Alerts(conn)
            if await alerts.escalate(alert.id, alert.escalation_level, now):
                escalated.append(await alerts.get(alert.id))
    await publish_alerts(bus, escalated)
    return escalated
