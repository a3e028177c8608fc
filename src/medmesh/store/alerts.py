"""Repository for alerts. Updates name the columns they change and the state they expect, so
a clinician's acknowledgement and a rule's re-trigger never overwrite each other."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import DataKey
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.errors import NotFound
from medmesh.store._sql import any_of
from medmesh.store.database import cipher_of
from medmesh.store.schema import alerts, patients

_ACTIVE = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)


# The detail quotes values ("SpO2 88 % for 5 min"): sealed with the patient's key.
_DETAIL = "alerts.detail"


def _alert(row: RowMapping, key: DataKey) -> Alert:
    return Alert(
        id=row["id"],
        patient_id=row["patient_id"],
        rule=row["rule"],
        dedupe_key=row["dedupe_key"],
        severity=Severity(row["severity"]),
        status=AlertStatus(row["status"]),
        title=row["title"],
        detail=key.open_text(row["detail"], _DETAIL, row["id"]),
        device_id=row["device_id"],
        observation_id=row["observation_id"],
        opened_at=row["opened_at"],
        last_triggered_at=row["last_triggered_at"],
        trigger_count=row["trigger_count"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        resolution=row["resolution"],
        escalation_level=row["escalation_level"],
        escalated_at=row["escalated_at"],
    )


# What every round of the rules runs, built once (store/_sql.py says why).
_LOCK_PATIENTS = (
    select(patients.c.id)
    .where(any_of(patients.c.id, "ids"))
    .order_by(patients.c.id)
    .with_for_update(key_share=True)
)
_ACTIVE_OF_PATIENT = select(alerts).where(
    alerts.c.patient_id == bindparam("p"), alerts.c.status.in_(_ACTIVE)
)
_ACTIVE_OF_PATIENTS = select(alerts).where(
    any_of(alerts.c.patient_id, "ids"), alerts.c.status.in_(_ACTIVE)
)


class Alerts:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_patient(self, patient_id: str) -> None:
        """Serialize alert changes for one patient until the transaction ends, so two batches
        evaluated at once cannot both open the same alert.

        PostgreSQL: FOR NO KEY UPDATE on the patient's row, which does not block the key-share
        lock that storing the patient's observations takes (store/observation_owners.py).
        SQLite has one writer at a time already (no FOR clause is emitted there). Lock several
        patients in sorted order.
        """
        await self._conn.execute(
            select(patients.c.id).where(patients.c.id == patient_id).with_for_update(key_share=True)
        )

    async def lock_patients(self, patient_ids: Collection[str]) -> None:
        """`lock_patient` for several patients in one statement, locked in id order."""
        if patient_ids:
            await self._conn.execute(_LOCK_PATIENTS, {"ids": sorted(patient_ids)})

    async def _all(self, query: Select[tuple[object, ...]]) -> list[Alert]:
        return await self._opened((await self._conn.execute(query)).mappings().all())

    async def _opened(self, rows: Sequence[RowMapping]) -> list[Alert]:
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        return [_alert(r, keys[r["patient_id"]]) for r in rows if r["patient_id"] in keys]

    async def _sealed_detail(self, alert: Alert) -> bytes:
        key = await cipher_of(self._conn).key(alert.patient_id)
        return key.seal_text(alert.detail, _DETAIL, alert.id)

    async def get(self, alert_id: str) -> Alert:
        found = await self._all(select(alerts).where(alerts.c.id == alert_id))
        if not found:
            raise NotFound("Alert not found")
        return found[0]

    async def search(
        self,
        patient_id: str | None = None,
        statuses: Sequence[AlertStatus] = (),
        limit: int = 100,
        offset: int = 0,
        within: Collection[str] | None = None,
    ) -> list[Alert]:
        """Alerts newest first (by when they were opened); `within`: only these patients'."""
        query = select(alerts).order_by(alerts.c.opened_at.desc(), alerts.c.id.desc())
        if within is not None:
            query = query.where(alerts.c.patient_id.in_(list(within)))
        if patient_id is not None:
            query = query.where(alerts.c.patient_id == patient_id)
        if statuses:
            query = query.where(alerts.c.status.in_([s.value for s in statuses]))
        return await self._all(query.limit(limit).offset(offset))

    async def opened_since(
        self, since: datetime, within: Collection[str], limit: int
    ) -> list[Alert]:
        """These patients' alerts opened at or after `since`, oldest first, at most `limit`:
        what a resuming event stream missed."""
        query = (
            select(alerts)
            .where(alerts.c.opened_at >= since, alerts.c.patient_id.in_(list(within)))
            .order_by(alerts.c.opened_at, alerts.c.id)
            .limit(limit)
        )
        return await self._all(query)

    async def open_counts_by_patient(self) -> dict[str, tuple[int, Severity]]:
        """Per patient with alerts not resolved: how many, and the highest severity."""
        query = select(alerts.c.patient_id, alerts.c.severity).where(alerts.c.status.in_(_ACTIVE))
        counts: dict[str, tuple[int, Severity]] = {}
        for patient_id, raw in (await self._conn.execute(query)).all():
            severity = Severity(raw)
            count, highest = counts.get(patient_id, (0, severity))
            counts[patient_id] = (count + 1, max(highest, severity, key=lambda s: s.rank))
        return counts

    async def active_for_patient(self, patient_id: str) -> dict[str, Alert]:
        """The patient's alerts not resolved, by dedupe key (at most one each)."""
        rows = (await self._conn.execute(_ACTIVE_OF_PATIENT, {"p": patient_id})).mappings().all()
        return {a.dedupe_key: a for a in await self._opened(rows)}

    async def active_for_patients(
        self, patient_ids: Collection[str]
    ) -> dict[str, dict[str, Alert]]:
        """`active_for_patient` of several patients in one statement: every patient asked for
        has an entry, empty when none of their alerts is active."""
        found: dict[str, dict[str, Alert]] = {patient_id: {} for patient_id in patient_ids}
        if found:
            result = await self._conn.execute(_ACTIVE_OF_PATIENTS, {"ids": sorted(found)})
            for alert in await self._opened(result.mappings().all()):
                found[alert.patient_id][alert.dedupe_key] = alert
        return found

    async def active_evidence(self, rules: Sequence[str]) -> dict[str, datetime]:
        """Last evidence time of each active alert of these rules, by dedupe key."""
        query = select(alerts.c.dedupe_key, alerts.c.last_triggered_at).where(
            alerts.c.rule.in_(list(rules)), alerts.c.status.in_(_ACTIVE)
        )
        return {key: last for key, last in (await self._conn.execute(query)).all()}

    async def awaiting_escalation(self, severities: Sequence[Severity]) -> list[Alert]:
        """Open (unacknowledged) alerts of these severities not escalated yet, oldest first."""
        query = (
            select(alerts)
            .where(
                alerts.c.status == AlertStatus.OPEN.value,
                alerts.c.severity.in_([s.value for s in severities]),
                alerts.c.escalation_level == 0,
            )
            .order_by(alerts.c.opened_at)
        )
        return await self._all(query)

    async def add(self, alert: Alert) -> None:
        detail = await self._sealed_detail(alert)
        await self._conn.execute(
            alerts.insert().values(
                id=alert.id,
                patient_id=alert.patient_id,
                rule=alert.rule,
                dedupe_key=alert.dedupe_key,
                severity=alert.severity.value,
                status=alert.status.value,
                title=alert.title,
                detail=detail,
                device_id=alert.device_id,
                observation_id=alert.observation_id,
                opened_at=alert.opened_at,
                last_triggered_at=alert.last_triggered_at,
                trigger_count=alert.trigger_count,
                acknowledged_at=alert.acknowledged_at,
                acknowledged_by=alert.acknowledged_by,
                resolved_at=alert.resolved_at,
                resolved_by=alert.resolved_by,
                resolution=alert.resolution,
                escalation_level=alert.escalation_level,
                escalated_at=alert.escalated_at,
            )
        )

    async def retrigger(self, alert: Alert) -> bool:
        """Store a re-trigger of an active alert: evidence time, count, severity, wording."""
        detail = await self._sealed_detail(alert)
        result = await self._conn.execute(
            update(alerts)
            .where(alerts.c.id == alert.id, alerts.c.status.in_(_ACTIVE))
            .values(
                last_triggered_at=alert.last_triggered_at,
                trigger_count=alerts.c.trigger_count + 1,
                severity=alert.severity.value,
                title=alert.title,
                detail=detail,
                device_id=alert.device_id,
                observation_id=alert.observation_id,
            )
        )
        return bool(result.rowcount)

    async def transition(self, alert: Alert, expected: AlertStatus) -> bool:
        """Store `alert`'s status, acknowledgement and resolution if the stored alert is still
        `expected`; False when someone else changed it first."""
        result = await self._conn.execute(
            update(alerts)
            .where(alerts.c.id == alert.id, alerts.c.status == expected.value)
            .values(
                status=alert.status.value,
                acknowledged_at=alert.acknowledged_at,
                acknowledged_by=alert.acknowledged_by,
                resolved_at=alert.resolved_at,
                resolved_by=alert.resolved_by,
                resolution=alert.resolution,
            )
        )
        return bool(result.rowcount)

    async def escalate(self, alert_id: str, from_level: int, at: datetime) -> bool:
        """Raise the escalation level by one if it is still `from_level` and the alert still
        open; False when another process escalated it or a clinician acknowledged it."""
        result = await self._conn.execute(
            update(alerts)
            .where(
                alerts.c.id == alert_id,
                alerts.c.escalation_level == from_level,
                alerts.c.status == AlertStatus.OPEN.value,
            )
            .values(escalation_level=from_level + 1, escalated_at=at)
        )
        return bool(result.rowcount)


async def alerts_for_export(
    conn: AsyncConnection,
    patient_id: str,
    *,
    opened_from: datetime | None = None,
    opened_before: datetime | None = None,
    changed_since: datetime | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[Alert]:
    """One patient's alerts, oldest first: opened in [opened_from, opened_before), and changed
    (opened, re-triggered, acknowledged, escalated or resolved) at or after `changed_since`."""
    query = select(alerts).where(alerts.c.patient_id == patient_id)
    if opened_from is not None:
        query = query.where(alerts.c.opened_at >= opened_from)
    if opened_before is not None:
        query = query.where(alerts.c.opened_at < opened_before)
    if changed_since is not None:
        query = query.where(
            or_(
                *(
                    column >= changed_since
                    for column in (
                        alerts.c.opened_at,
                        alerts.c.last_triggered_at,
                        alerts.c.acknowledged_at,
                        alerts.c.escalated_at,
                        alerts.c.resolved_at,
                    )
                )
            )
        )
    query = query.order_by(alerts.c.opened_at, alerts.c.id).limit(limit).offset(offset)
    return await Alerts(conn)._all(query)


async def count_alerts(
    conn: AsyncConnection,
    *,
    patient_id: str | None = None,
    statuses: Sequence[AlertStatus] = (),
    within: Collection[str] | None = None,
) -> int:
    """How many alerts Alerts.search would find with these filters (FHIR Bundle.total)."""
    query = select(func.count()).select_from(alerts)
    if within is not None:
        query = query.where(alerts.c.patient_id.in_(list(within)))
    if patient_id is not None:
        query = query.where(alerts.c.patient_id == patient_id)
    if statuses:
        query = query.where(alerts.c.status.in_([s.value for s in statuses]))
    return int((await conn.execute(query)).scalar_one())
