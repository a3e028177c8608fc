"""Where every received DICOM instance goes, whichever door it came in by (C-STORE, STOW-RS):
read and checked, matched to one patient by PatientID (and IssuerOfPatientID), filed once per
SOP Instance UID, or kept in quarantine with the reason when no single patient matches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.errors import Conflict, NotFound
from medmesh.domain.imaging import InstanceHeader, InvalidInstance, QuarantineStatus
from medmesh.imaging.dicom_files import read_instance
from medmesh.store.database import Database
from medmesh.store.imaging import ImagingRecords, StudyOfAnotherPatient
from medmesh.store.registry import Patients

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same SOP Instance UID was already stored: kept once
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Receipt:
    outcome: Outcome
    header: InstanceHeader
    patient_id: str | None = None
    reason: str | None = None  # why it waits in quarantine


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ImagingArchive:
    """Files instances under patients. `max_instance_bytes` bounds one file."""

    def __init__(
        self,
        database: Database,
        *,
        max_instance_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.database = self._database = database
        self.max_instance_bytes = max_instance_bytes
        self._clock = clock

    async def receive(self, content: bytes, source: str) -> Receipt:
        """Store one Part 10 file. Raises InvalidInstance (nothing stored) for a file that is
        not DICOM, truncated, too large or missing what medmesh needs."""
        if len(content) > self.max_instance_bytes:
            raise InvalidInstance("the instance is larger than MEDMESH_DICOM_MAX_INSTANCE_BYTES")
        _, header = read_instance(content)
        return await self.file(header, content, source)

    async def file(self, header: InstanceHeader, content: bytes, source: str) -> Receipt:
        at = self._clock()
        async with self._database.write() as conn:
            records = ImagingRecords(conn)
            if await records.has_instance(header.sop_instance_uid):
                return Receipt(Outcome.DUPLICATE, header)
            matches = await Patients(conn).all_by_identifier(
                header.issuer_of_patient_id, header.patient_id
            )
            reason = None
            if not matches:
                reason = "no patient has this PatientID" + (
                    " from this issuer" if header.issuer_of_patient_id else ""
                )
            elif len(matches) > 1:
                reason = "the PatientID matches more than one patient (give IssuerOfPatientID)"
            else:
                patient_id = matches[0].id
                try:
                    async with conn.begin_nested():
                        stored = await records.add_instance(patient_id, header, content, at)
                except StudyOfAnotherPatient as error:
                    reason = str(error)
                except DataKeyDestroyed:
                    reason = "the matching patient's record is closed (erased)"
                else:
                    outcome = Outcome.STORED if stored else Outcome.DUPLICATE
                    return Receipt(outcome, header, patient_id)
            await records.quarantine(header, content, reason=reason, source=source, at=at)
        log.info("imaging instance quarantined (%s)", reason)
        return Receipt(Outcome.QUARANTINED, header, reason=reason)

    async def assign(self, item_id: str, patient_id: str, *, by: str) -> Receipt:
        """File a quarantined instance under a patient an org admin chose."""
        at = self._clock()
        async with self._database.write() as conn:
            records = ImagingRecords(conn)
            item = await records.quarantined_item(item_id)
            if item is None:
                raise NotFound("the quarantined instance is not known")
            if item.status is not QuarantineStatus.WAITING:
                raise Conflict(f"the quarantined instance was already {item.status.value}")
            if await Patients(conn).get_many([patient_id]) == []:
                raise NotFound("the patient is not known")
            content = await records.quarantined_content(item_id)
            _, header = read_instance(content)
            try:
                await records.add_instance(patient_id, header, content, at)
            except StudyOfAnotherPatient as error:
                raise Conflict(str(error)) from None
            await records.decide(item_id, QuarantineStatus.ASSIGNED, by=by, at=at)
        return Receipt(Outcome.STORED, header, patient_id)

    async def reject(self, item_id: str, *, by: str) -> None:
        """Refuse a quarantined instance: its file is emptied and its key destroyed."""
        async with self._database.write() as conn:
            records = ImagingRecords(conn)
            item = await records.quarantined_item(item_id)
            if item is None:
                raise NotFound("the quarantined instance is not known")
            if item.status is not QuarantineStatus.WAITING:
                raise Conflict(f"the quarantined instance was already {item.status.value}")
            await records.decide(item_id, QuarantineStatus.REJECTED, by=by, at=self._clock())
