"""The time-based checks (stale devices, missed readings, escalation), run by a task every
`alert_check_interval_seconds`; tests call `run_checks` with the `now` they want."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from medmesh.domain.alerts import Alert
from medmesh.events.bus import EventBus
from medmesh.rules import schedule
from medmesh.rules.alerting import apply_outcomes
from medmesh.rules.escalation import escalate_overdue
from medmesh.rules.notify import publish_alerts
from medmesh.rules.outcomes import Outcome
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


async def check_schedules(database: Database, bus: EventBus, now: datetime) -> list[Alert]:
    """Stale devices and missed readings as of `now`; returns the alerts changed."""
    async with database.read() as conn:
        found: dict[str, list[Outcome]] = {}
        for source in (schedule.device_outcomes, schedule.adherence_outcomes):
            for patient_id, outcomes in (await source(conn, now)).items():
                found.setdefault(patient_id, []).extend(outcomes)
        active = await Alerts(conn).active_evidence(list(schedule.RULES))
    changed: list[Alert] = []
    for patient_id, outcomes in found.items():
        needed = schedule.worth_storing(outcomes, active)
        if not needed:
            continue
        async with database.write() as conn:
            alerts = Alerts(conn)
            await alerts.lock_patient(patient_id)
            changed += await apply_outcomes(alerts, patient_id, needed, now)
    await publish_alerts(bus, changed)
    return changed


async def run_checks(database: Database, bus: EventBus, now: datetime) -> list[Alert]:
    """Every time-based check once, as of `now`."""
    changed = await check_schedules(database, bus, now)
    return changed + await escalate_overdue(database, bus, now)


class PeriodicChecks:
    """Runs `run_checks` every `interval` seconds until stopped. A failed round is logged
    (type only) and the next one runs as usual."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        interval: float,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._bus = bus
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="medmesh-alert-checks")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                changed = await run_checks(self._database, self._bus, self._clock())
            except Exception as exc:  # the next round may well succeed (database restarted)
                log.error("periodic alert checks failed (%s)", type(exc).__name__)
                continue
            if changed:
                log.info("periodic alert checks changed %d alert(s)", len(changed))
