"""Repository for medications and refill requests. What a medication is, the patient's note and
the care team's reason are sealed with the patient's key. One open refill request per
medication is the database's rule (a partial unique index): a duplicate is an `IntegrityError`,
turned into `Conflict` here."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import DataKey
from medmesh.domain.errors import Conflict
from medmesh.domain.medications import (
    Medication,
    MedicationStatus,
    RefillRequest,
    RefillStatus,
)
from medmesh.store.database import cipher_of
from medmesh.store.schema import medications, refill_requests

_DETAIL = "medications.detail"
_NOTE = "refill_requests.note"
_REASON = "refill_requests.reason"

DUPLICATE_REFILL = "a refill of this medication is already requested; the care team will answer it"


def _medication(row: RowMapping, key: DataKey) -> Medication:
    detail = json.loads(key.open_text(row["detail"], _DETAIL, row["id"]))
    return Medication(
        id=row["id"],
        patient_id=row["patient_id"],
        name=detail["name"],
        rxnorm=detail.get("rxnorm"),
        dosage=detail["dosage"],
        refills=row["refills"],
        status=MedicationStatus(row["status"]),
        requester_id=row["requester_id"],
        requester_name=row["requester_name"],
        authored_at=row["authored_at"],
        prior_id=row["prior_id"],
        status_changed_at=row["status_changed_at"],
    )


def _opened(key: DataKey, sealed: bytes | None, column: str, row: str) -> str | None:
    return None if sealed is None else key.open_text(sealed, column, row)


def _refill(row: RowMapping, key: DataKey) -> RefillRequest:
    return RefillRequest(
        id=row["id"],
        patient_id=row["patient_id"],
        medication_id=row["medication_id"],
        status=RefillStatus(row["status"]),
        note=_opened(key, row["note"], _NOTE, row["id"]),
        requested_at=row["requested_at"],
        requested_by=row["requested_by"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        decided_by_name=row["decided_by_name"],
        reason=_opened(key, row["reason"], _REASON, row["id"]),
        renewal_id=row["renewal_id"],
    )


class Medications:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, medication: Medication) -> None:
        key = await cipher_of(self._conn).key(medication.patient_id)
        detail = json.dumps(
            {"name": medication.name, "rxnorm": medication.rxnorm, "dosage": medication.dosage}
        )
        await self._conn.execute(
            medications.insert().values(
                id=medication.id,
                patient_id=medication.patient_id,
                detail=key.seal_text(detail, _DETAIL, medication.id),
                refills=medication.refills,
                status=medication.status.value,
                requester_id=medication.requester_id,
                requester_name=medication.requester_name,
                authored_at=medication.authored_at,
                prior_id=medication.prior_id,
            )
        )

    async def _all(self, query: Select[tuple[object, ...]]) -> list[Medication]:
        rows = (await self._conn.execute(query)).mappings().all()
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        return [_medication(r, keys[r["patient_id"]]) for r in rows if r["patient_id"] in keys]

    async def get(self, medication_id: str) -> Medication | None:
        found = await self._all(select(medications).where(medications.c.id == medication_id))
        return found[0] if found else None

    async def search(
        self,
        *,
        within: Collection[str],
        statuses: Sequence[MedicationStatus] = (),
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Medication]:
        """Medications of these patients, newest first."""
        if not within:
            return []
        query = select(medications).where(medications.c.patient_id.in_(list(within)))
        if statuses:
            query = query.where(medications.c.status.in_([s.value for s in statuses]))
        query = query.order_by(medications.c.authored_at.desc(), medications.c.id)
        return await self._all(query.limit(limit).offset(offset))

    async def for_export(
        self,
        patient_id: str,
        *,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[Medication]:
        query = select(medications).where(medications.c.patient_id == patient_id)
        if since is not None:
            query = query.where(medications.c.authored_at >= since)
        if until is not None:
            query = query.where(medications.c.authored_at < until)
        query = query.order_by(medications.c.authored_at, medications.c.id)
        return await self._all(query.limit(limit).offset(offset))

    async def set_status(self, medication_id: str, status: MedicationStatus, at: datetime) -> bool:
        """Move an active medication to `status`; False if it was not active any more."""
        result = await self._conn.execute(
            update(medications)
            .where(
                medications.c.id == medication_id,
                medications.c.status == MedicationStatus.ACTIVE.value,
            )
            .values(status=status.value, status_changed_at=at)
        )
        return bool(result.rowcount)


class RefillRequests:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, refill: RefillRequest) -> None:
        """Store an open request; Conflict if one is open for the medication already."""
        key = await cipher_of(self._conn).key(refill.patient_id)
        note = None if refill.note is None else key.seal_text(refill.note, _NOTE, refill.id)
        statement = refill_requests.insert().values(
            id=refill.id,
            patient_id=refill.patient_id,
            medication_id=refill.medication_id,
            status=refill.status.value,
            note=note,
            requested_at=refill.requested_at,
            requested_by=refill.requested_by,
        )
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(statement)
        except IntegrityError:
            raise Conflict(DUPLICATE_REFILL) from None

    async def _all(self, query: Select[tuple[object, ...]]) -> list[RefillRequest]:
        rows = (await self._conn.execute(query)).mappings().all()
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        return [_refill(r, keys[r["patient_id"]]) for r in rows if r["patient_id"] in keys]

    async def get(self, refill_id: str) -> RefillRequest | None:
        found = await self._all(select(refill_requests).where(refill_requests.c.id == refill_id))
        return found[0] if found else None

    async def search(
        self, *, within: Collection[str], statuses: Sequence[RefillStatus] = (), limit: int = 500
    ) -> list[RefillRequest]:
        """Requests of these patients, oldest first (the queue's order)."""
        if not within:
            return []
        query = select(refill_requests).where(refill_requests.c.patient_id.in_(list(within)))
        if statuses:
            query = query.where(refill_requests.c.status.in_([s.value for s in statuses]))
        query = query.order_by(refill_requests.c.requested_at, refill_requests.c.id)
        return await self._all(query.limit(limit))

    async def decide(
        self,
        refill: RefillRequest,
        *,
        status: RefillStatus,
        by: str,
        by_name: str,
        at: datetime,
        reason: str | None = None,
        renewal_id: str | None = None,
    ) -> bool:
        """Close an open request; False if someone decided it first."""
        key = await cipher_of(self._conn).key(refill.patient_id)
        sealed = None if reason is None else key.seal_text(reason, _REASON, refill.id)
        result = await self._conn.execute(
            update(refill_requests)
            .where(
                refill_requests.c.id == refill.id,
                refill_requests.c.status == RefillStatus.OPEN.value,
            )
            .values(
                status=status.value,
                decided_at=at,
                decided_by=by,
                decided_by_name=by_name,
                reason=sealed,
                renewal_id=renewal_id,
            )
        )
        return bool(result.rowcount)
