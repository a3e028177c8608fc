"""The patient panel: every patient, most urgent first (highest active-alert severity, then
number of active alerts, then name), a page at a time, with each patient's latest vitals.

Ordering needs every patient's alert summary (one grouped query) but only the page's patients
are read in full: their latest vitals in one statement, their alerts in one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.registry import Patient
from medmesh.store.alerts import Alerts
from medmesh.store.registry import Patients
from medmesh.store.vitals import Vitals
from medmesh.web.vitals import PANEL_CODES, PANEL_VITALS, ShownValue, VitalSpec, shown

PAGE_SIZE = 50
MAX_PATIENTS = 20_000  # a panel is one team's patients; past this it needs a filter first
_ACTIVE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


@dataclass(frozen=True, slots=True)
class PanelRow:
    patient: Patient
    active_alerts: int
    severity: Severity | None
    top_alert: Alert | None  # the most severe active alert, newest first among equals
    unacknowledged: int
    vitals: tuple[tuple[VitalSpec, ShownValue | None], ...]
    last_reading: datetime | None


@dataclass(frozen=True, slots=True)
class PanelPage:
    rows: list[PanelRow]
    page: int
    pages: int
    total: int
    patients_by_severity: dict[Severity, int]


def urgency_order(
    patients: Sequence[Patient], counts: dict[str, tuple[int, Severity]]
) -> list[Patient]:
    def key(p: Patient) -> tuple[int, int, str, str, str]:
        count, severity = counts.get(p.id, (0, None))
        rank = severity.rank if severity is not None else -1
        return (-rank, -count, p.family.casefold(), p.given.casefold(), p.id)

    return sorted(patients, key=key)


async def panel_page(
    conn: AsyncConnection,
    page: int,
    now: datetime,
    size: int = PAGE_SIZE,
    *,
    within: Collection[str],
) -> PanelPage:
    """A page of the panel of the patients `within` (those the clinician may see)."""
    counts = {p: c for p, c in (await Alerts(conn).open_counts_by_patient()).items() if p in within}
    found = await Patients(conn).search(within=within, limit=MAX_PATIENTS)
    everyone = urgency_order(found, counts)
    pages = max(1, math.ceil(len(everyone) / size))
    page = min(max(page, 1), pages)
    chosen = everyone[(page - 1) * size : page * size]
    by_severity = {s: 0 for s in Severity}
    for _, severity in counts.values():
        by_severity[severity] += 1
    rows = await _rows(conn, chosen, counts, now)
    return PanelPage(rows, page, pages, len(everyone), by_severity)


async def panel_rows(
    conn: AsyncConnection, patient_ids: Sequence[str], now: datetime
) -> list[PanelRow]:
    """Rows of the given patients (a live refresh), in the order given; unknown ids skipped."""
    found = {p.id: p for p in await Patients(conn).get_many(patient_ids)}
    chosen = [found[i] for i in dict.fromkeys(patient_ids) if i in found]
    counts = await Alerts(conn).open_counts_by_patient()
    return await _rows(conn, chosen, counts, now)


async def _rows(
    conn: AsyncConnection,
    patients: Sequence[Patient],
    counts: dict[str, tuple[int, Severity]],
    now: datetime,
) -> list[PanelRow]:
    ids = [p.id for p in patients]
    latest = await Vitals(conn).latest(ids, PANEL_CODES)
    wanted = set(ids)
    active: dict[str, list[Alert]] = {}
    if any(p in counts for p in wanted):
        for alert in await Alerts(conn).search(statuses=_ACTIVE, limit=MAX_PATIENTS):
            if alert.patient_id in wanted:
                active.setdefault(alert.patient_id, []).append(alert)
    last_reading: dict[str, datetime] = {}
    for (patient_id, _), value in latest.items():
        if patient_id not in last_reading or value.effective > last_reading[patient_id]:
            last_reading[patient_id] = value.effective
    rows = []
    for patient in patients:
        count, severity = counts.get(patient.id, (0, None))
        alerts = active.get(patient.id, [])
        top = max(alerts, key=lambda a: (a.severity.rank, a.opened_at), default=None)
        vitals = tuple((v, shown(v, patient.id, latest, now)) for v in PANEL_VITALS)
        rows.append(
            PanelRow(
                patient=patient,
                active_alerts=count,
                severity=severity,
                top_alert=top,
                unacknowledged=sum(a.status is AlertStatus.OPEN for a in alerts),
                vitals=vitals,
                last_reading=last_reading.get(patient.id),
            )
        )
    return rows
