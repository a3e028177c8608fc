"""The rules on every committed batch: per patient, read the recent history the woken rules
need, judge it, store the alert changes, then publish them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Alert
from medmesh.domain.reading import Reading
from medmesh.events.bus import EventBus
from medmesh.rules import catalog
from medmesh.rules.alerting import apply_outcomes
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.notify import publish_alerts
from medmesh.rules.outcomes import Cleared, Outcome, dedupe_key
from medmesh.rules.schedule import STALE_RULE
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations, TimeBound

log = logging.getLogger(__name__)

MAX_HISTORY_ROWS = 20_000


def _now() -> datetime:
    return datetime.now(UTC)


class RuleEngine:
    """Register `on_committed` with the ingest pipeline. `clock` stamps alert changes (when
    medmesh raised or resolved them); rules judge readings by their own times."""

    def __init__(
        self, database: Database, bus: EventBus, clock: Callable[[], datetime] = _now
    ) -> None:
        self._database = database
        self._bus = bus
        self._clock = clock

    async def on_committed(self, readings: Sequence[Reading]) -> None:
        """Judge each patient of a committed batch, all in one transaction (one commit, not
        one a patient), then publish the changes."""
        by_patient: dict[str, list[Reading]] = {}
        for reading in readings:
            by_patient.setdefault(reading.patient_id, []).append(reading)
        changed: list[Alert] = []
        async with self._database.write() as conn:
            for patient_id in sorted(by_patient):  # sorted: locks taken in one order
                changed += await self._evaluate(conn, patient_id, by_patient[patient_id])
        await publish_alerts(self._bus, changed)
        # Counts only: titles and details are health data.
        log.debug("rules changed %d alert(s) for %d patient(s)", len(changed), len(by_patient))

    async def _evaluate(
        self, conn: AsyncConnection, patient_id: str, readings: Sequence[Reading]
    ) -> list[Alert]:
        """Judge one patient's state at the newest of `readings` and store the changes."""
        batch_codes = {r.measure.code for r in readings}
        newest = max(r.effective for r in readings)
        alerts = Alerts(conn)
        await alerts.lock_patient(patient_id)
        thresholds = thresholds_for(await CarePlans(conn).get(patient_id))
        outcomes: list[Outcome] = [
            # A device that sends readings is reporting again.
            Cleared(dedupe_key(STALE_RULE, patient_id, device_id))
            for device_id in sorted({r.device_id for r in readings})
        ]
        codes = catalog.codes_to_read(batch_codes, thresholds)
        if codes:
            history = await Observations(conn).search(
                ObservationQuery(
                    patient_id=patient_id,
                    codes=codes,
                    bounds=(
                        TimeBound("ge", newest - catalog.lookback(thresholds)),
                        TimeBound("le", newest),
                    ),
                    limit=MAX_HISTORY_ROWS,
                )
            )
            outcomes += catalog.evaluate(patient_id, history, batch_codes, thresholds)
        return await apply_outcomes(alerts, patient_id, outcomes, self._clock())
