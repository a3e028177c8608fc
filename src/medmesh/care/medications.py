"""Medications and refill requests: what each step checks and changes, in one transaction, and
the event that tells the other side (ids and the new status only)."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import datetime

from medmesh.access.identity.principals import Principal
from medmesh.domain.errors import Conflict, InvalidRequest, NotFound
from medmesh.domain.medications import (
    MAX_DOSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_NOTE_CHARS,
    MAX_REFILLS,
    Medication,
    MedicationStatus,
    RefillRequest,
    RefillStatus,
)
from medmesh.events.bus import EventBus
from medmesh.events.model import REFILL, Event
from medmesh.store.database import Database
from medmesh.store.medications import Medications, RefillRequests

_RXNORM = re.compile(r"[0-9]{1,10}")
ALREADY_ANSWERED = "this refill request was already answered"


def _text(value: str | None, field: str, limit: int, *, required: bool) -> str | None:
    text = " ".join((value or "").split())
    if not text:
        if required:
            raise InvalidRequest(f"{field} is required")
        return None
    if len(text) > limit:
        raise InvalidRequest(f"{field} is longer than {limit} characters")
    return text


def refills_count(value: int) -> int:
    if not 0 <= value <= MAX_REFILLS:
        raise InvalidRequest(f"refills must be between 0 and {MAX_REFILLS}")
    return value


def new_medication(
    *,
    patient_id: str,
    prescriber: Principal,
    name: str,
    rxnorm: str | None,
    dosage: str,
    refills: int,
    at: datetime,
    prior_id: str | None = None,
) -> Medication:
    code = (rxnorm or "").strip() or None
    if code is not None and not _RXNORM.fullmatch(code):
        raise InvalidRequest("rxnorm must be an RxNorm concept id (digits), or left out")
    return Medication(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        name=_text(name, "name", MAX_NAME_CHARS, required=True) or "",
        rxnorm=code,
        dosage=_text(dosage, "dosage", MAX_DOSAGE_CHARS, required=True) or "",
        refills=refills_count(refills),
        status=MedicationStatus.ACTIVE,
        requester_id=prescriber.id,
        requester_name=prescriber.name,
        authored_at=at,
        prior_id=prior_id,
    )


async def _announce(bus: EventBus, refill: RefillRequest) -> None:
    data = {
        "refill_request_id": refill.id,
        "medication_id": refill.medication_id,
        "status": refill.status.value,
    }
    if refill.renewal_id is not None:
        data["renewal_id"] = refill.renewal_id  # the new MedicationRequest, once approved
    await bus.publish(Event(REFILL, refill.patient_id, data))


async def prescribe(database: Database, medication: Medication) -> Medication:
    async with database.write() as conn:
        await Medications(conn).add(medication)
    return medication


async def stop(database: Database, medication: Medication, at: datetime) -> Medication:
    async with database.write() as conn:
        if not await Medications(conn).set_status(medication.id, MedicationStatus.STOPPED, at):
            raise Conflict("this medication is not active any more")
        stopped = await Medications(conn).get(medication.id)
    assert stopped is not None
    return stopped


async def request_refill(
    database: Database,
    bus: EventBus,
    *,
    medication: Medication,
    patient: Principal,
    note: str | None,
    at: datetime,
) -> RefillRequest:
    text = _text(note, "note", MAX_NOTE_CHARS, required=False)
    refill = RefillRequest(
        id=str(uuid.uuid4()),
        patient_id=medication.patient_id,
        medication_id=medication.id,
        status=RefillStatus.OPEN,
        note=text,
        requested_at=at,
        requested_by=patient.id,
    )
    async with database.write() as conn:
        current = await Medications(conn).get(medication.id)
        if current is None or current.status is not MedicationStatus.ACTIVE:
            raise Conflict(
                "this medication is no longer active, so it cannot be refilled; "
                "write to your care team instead"
            )
        await RefillRequests(conn).add(refill)  # Conflict when one is open already
    await _announce(bus, refill)
    return refill


async def _open(conn_refills: RefillRequests, refill_id: str) -> RefillRequest:
    refill = await conn_refills.get(refill_id)
    if refill is None:
        raise NotFound("this refill request is not known")
    if refill.status is not RefillStatus.OPEN:
        raise Conflict(ALREADY_ANSWERED)
    return refill


async def approve(
    database: Database,
    bus: EventBus,
    *,
    refill_id: str,
    clinician: Principal,
    refills: int,
    dosage: str | None,
    at: datetime,
) -> tuple[RefillRequest, Medication]:
    """A new MedicationRequest renewing the old one (which is completed), with the approving
    clinician as requester."""
    async with database.write() as conn:
        queue, medications = RefillRequests(conn), Medications(conn)
        refill = await _open(queue, refill_id)
        old = await medications.get(refill.medication_id)
        if old is None or old.status is not MedicationStatus.ACTIVE:
            raise Conflict("the medication was stopped meanwhile; deny the request instead")
        renewal = new_medication(
            patient_id=old.patient_id,
            prescriber=clinician,
            name=old.name,
            rxnorm=old.rxnorm,
            dosage=dosage if dosage is not None else old.dosage,
            refills=refills,
            at=at,
            prior_id=old.id,
        )
        await medications.set_status(old.id, MedicationStatus.COMPLETED, at)
        await medications.add(renewal)
        if not await queue.decide(
            refill,
            status=RefillStatus.APPROVED,
            by=clinician.id,
            by_name=clinician.name,
            at=at,
            renewal_id=renewal.id,
        ):
            raise Conflict(ALREADY_ANSWERED)
    decided = replace(
        refill,
        status=RefillStatus.APPROVED,
        decided_at=at,
        decided_by=clinician.id,
        decided_by_name=clinician.name,
        renewal_id=renewal.id,
    )
    await _announce(bus, decided)
    return decided, renewal


async def answer(
    database: Database,
    bus: EventBus,
    *,
    refill_id: str,
    clinician: Principal,
    status: RefillStatus,
    reason: str | None,
    at: datetime,
) -> RefillRequest:
    """Deny (a reason is required: the patient reads it) or ask for a visit (note optional)."""
    assert status in (RefillStatus.DENIED, RefillStatus.VISIT_REQUESTED)
    text = _text(reason, "reason", MAX_NOTE_CHARS, required=status is RefillStatus.DENIED)
    async with database.write() as conn:
        queue = RefillRequests(conn)
        refill = await _open(queue, refill_id)
        if not await queue.decide(
            refill, status=status, by=clinician.id, by_name=clinician.name, at=at, reason=text
        ):
            raise Conflict(ALREADY_ANSWERED)
    decided = replace(
        refill,
        status=status,
        decided_at=at,
        decided_by=clinician.id,
        decided_by_name=clinician.name,
        reason=text,
    )
    await _announce(bus, decided)
    return decided
