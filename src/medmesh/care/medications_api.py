"""The JSON API of medications and refill requests. The care team keeps the list and answers
requests; the patient asks for refills. Every route decides through the access policy
(resource type `MedicationRequest`) and is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import medications as care
from medmesh.domain.errors import InvalidSearch, NotFound
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
from medmesh.http.deps import BusDep, DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.database import Database
from medmesh.store.medications import Medications, RefillRequests

router = APIRouter(prefix="/api/v1", tags=["medications"], responses=ERROR_RESPONSES)

RESOURCE = "MedicationRequest"


class Prescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=MAX_NAME_CHARS, description="e.g. Lisinopril 10 mg tablet")
    rxnorm: str | None = Field(None, max_length=10, description="RxNorm concept id, optional")
    dosage: str = Field(max_length=MAX_DOSAGE_CHARS, description="e.g. 1 tablet once a day")
    refills: int = Field(0, ge=0, le=MAX_REFILLS)


class RefillAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=MAX_NOTE_CHARS)


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refills: int = Field(ge=0, le=MAX_REFILLS)
    dosage: str | None = Field(None, max_length=MAX_DOSAGE_CHARS)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=MAX_NOTE_CHARS)


def medication_json(medication: Medication) -> dict[str, Any]:
    return {
        "id": medication.id,
        "patient_id": medication.patient_id,
        "name": medication.name,
        "rxnorm": medication.rxnorm,
        "dosage": medication.dosage,
        "refills": medication.refills,
        "status": medication.status.value,
        "requester": {"id": medication.requester_id, "name": medication.requester_name},
        "authored_at": medication.authored_at.isoformat(),
        "renews": medication.prior_id,
    }


def refill_json(refill: RefillRequest, now: datetime) -> dict[str, Any]:
    return {
        "id": refill.id,
        "patient_id": refill.patient_id,
        "medication_id": refill.medication_id,
        "status": refill.status.value,
        "note": refill.note,
        "requested_at": refill.requested_at.isoformat(),
        "overdue": refill.overdue(now),
        "decided_at": refill.decided_at.isoformat() if refill.decided_at else None,
        "decided_by": refill.decided_by_name,
        "reason": refill.reason,
        "renewal_id": refill.renewal_id,
    }


async def _medication(
    request: Request,
    principal: Principal,
    medication_id: str,
    interaction: Interaction,
    actors: tuple[str, ...],
) -> Medication:
    async with database_of(request).read() as conn:
        medication = await Medications(conn).get(medication_id)
    if medication is None:
        raise NotFound("this medication is not known")
    await care_access.decide(
        request,
        principal,
        medication.patient_id,
        RESOURCE,
        interaction,
        actors=actors,
        resource_id=medication_id,
        hide=True,
    )
    return medication


async def _refill(request: Request, principal: Principal, refill_id: str) -> RefillRequest:
    """An open or answered refill request the principal may answer (the care team)."""
    async with database_of(request).read() as conn:
        refill = await RefillRequests(conn).get(refill_id)
    if refill is None:
        raise NotFound("this refill request is not known")
    await care_access.decide(
        request,
        principal,
        refill.patient_id,
        RESOURCE,
        Interaction.UPDATE,
        actors=(care_access.CARE_TEAM,),
        resource_id=refill_id,
        hide=True,
    )
    return refill


def _statuses(values: list[str], kind: type[MedicationStatus] | type[RefillStatus]) -> list[Any]:
    wanted = []
    for value in (v for raw in values for v in raw.split(",") if v):
        try:
            wanted.append(kind(value))
        except ValueError:
            raise InvalidSearch(
                f"status must be one of {', '.join(s.value for s in kind)}"
            ) from None
    return wanted


@router.get("/patients/{patient_id}/medications", summary="A patient's medications")
async def list_medications(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    status: list[str] = Query(default=[]),
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    wanted = _statuses(status, MedicationStatus)
    await care_access.decide(request, principal, patient_id, RESOURCE, Interaction.SEARCH)
    async with database.read() as conn:
        found = await Medications(conn).search(within=[patient_id], statuses=wanted)
    return {"medications": [medication_json(m) for m in found]}


@router.post(
    "/patients/{patient_id}/medications",
    status_code=201,
    summary="Add a medication to a patient's list (their care team)",
)
async def add_medication(
    patient_id: str,
    body: Prescription,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await care_access.decide(
        request,
        principal,
        patient_id,
        RESOURCE,
        Interaction.CREATE,
        actors=(care_access.CARE_TEAM,),
        refusal="only the patient's care team keeps their medication list",
    )
    medication = care.new_medication(
        patient_id=patient_id,
        prescriber=principal,
        name=body.name,
        rxnorm=body.rxnorm,
        dosage=body.dosage,
        refills=body.refills,
        at=datetime.now(UTC),
    )
    return medication_json(await care.prescribe(database, medication))


@router.post("/medications/{medication_id}/stop", summary="Stop a medication (care team)")
async def stop_medication(
    medication_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    medication = await _medication(
        request, principal, medication_id, Interaction.UPDATE, (care_access.CARE_TEAM,)
    )
    return medication_json(await care.stop(database, medication, datetime.now(UTC)))


@router.post(
    "/medications/{medication_id}/refill-requests",
    status_code=201,
    summary="Ask for a refill of an active medication (the patient)",
)
async def ask_for_refill(
    medication_id: str,
    body: RefillAsk,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    medication = await _medication(
        request, principal, medication_id, Interaction.CREATE, (care_access.SELF,)
    )
    now = datetime.now(UTC)
    refill = await care.request_refill(
        database, bus, medication=medication, patient=principal, note=body.note, at=now
    )
    return refill_json(refill, now)


@router.get("/refill-requests", summary="Refill requests, oldest first (the care team's queue)")
async def list_refill_requests(
    request: Request,
    database: DatabaseDep,
    patient: str | None = None,
    status: list[str] = Query(default=[]),
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    """A clinician's queue (their care-team patients; `status=open` for what waits), or a
    patient's own requests."""
    wanted = _statuses(status, RefillStatus)
    decisions = await search_scope(request, principal, patient, resource_type=RESOURCE)
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await RefillRequests(conn).search(within=within, statuses=wanted)
    if patient is None:
        await audit_results(
            request, principal, decisions, [r.patient_id for r in found], resource_type=RESOURCE
        )
    now = datetime.now(UTC)
    return {"refill_requests": [refill_json(r, now) for r in found]}


@router.post("/refill-requests/{refill_id}/approve", summary="Approve: renew the medication")
async def approve_refill(
    refill_id: str,
    body: Approval,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _refill(request, principal, refill_id)
    now = datetime.now(UTC)
    refill, renewal = await care.approve(
        database,
        bus,
        refill_id=refill_id,
        clinician=principal,
        refills=body.refills,
        dosage=body.dosage,
        at=now,
    )
    return {**refill_json(refill, now), "renewal": medication_json(renewal)}


async def _answer(
    request: Request,
    principal: Principal,
    database: Database,
    bus: EventBus,
    refill_id: str,
    status: RefillStatus,
    body: Answer,
) -> dict[str, Any]:
    """Deny a refill or ask for a visit first: the answer, with the reason the patient reads."""
    await _refill(request, principal, refill_id)
    now = datetime.now(UTC)
    refill = await care.answer(
        database,
        bus,
        refill_id=refill_id,
        clinician=principal,
        status=status,
        reason=body.reason,
        at=now,
    )
    return refill_json(refill, now)


@router.post("/refill-requests/{refill_id}/deny", summary="Deny, with a reason for the patient")
async def deny_refill(
    refill_id: str,
    body: Answer,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    return await _answer(request, principal, database, bus, refill_id, RefillStatus.DENIED, body)


@router.post("/refill-requests/{refill_id}/visit", summary="Ask the patient to book a visit first")
async def ask_for_visit(
    refill_id: str,
    body: Answer,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    status = RefillStatus.VISIT_REQUESTED
    return await _answer(request, principal, database, bus, refill_id, status, body)
