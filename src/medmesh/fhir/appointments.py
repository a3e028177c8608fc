"""Appointments, clinicians' schedules and their slots as FHIR Appointment, Schedule and Slot
(read and search). Booking goes through the appointments API (care/). A Slot's id is its
schedule's id and its start in seconds since the epoch (`<schedule>.<seconds>`): slots are
computed from the schedule, not stored. Schedules and Slots name no patient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Schedule,
    VisitKind,
    free_slots,
)
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir import search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.care_reads import Loaded, read_care_resource
from medmesh.fhir.resources import instant
from medmesh.fhir.search import (
    parse_date_param,
    parse_paging,
    parse_reference,
    query_params,
    reject_unknown,
    single,
)
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.appointments import Appointments, Schedules

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

SERVICE_TYPE = "https://medmesh.dev/fhir/CodeSystem/visit-kind"
_KIND_DISPLAY = {VisitKind.IN_PERSON: "In person", VisitKind.VIDEO: "Video visit"}
_MAX_SLOT_RANGE = timedelta(days=62)


def _kinds(kinds: tuple[VisitKind, ...]) -> list[dict[str, Any]]:
    return [
        {"coding": [{"system": SERVICE_TYPE, "code": k.value, "display": _KIND_DISPLAY[k]}]}
        for k in kinds
    ]


def appointment_resource(appointment: Appointment) -> dict[str, Any]:
    cancelled = appointment.status is AppointmentStatus.CANCELLED
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": appointment.id,
        "status": appointment.status.value,
        "serviceType": _kinds((appointment.kind,)),
        "start": instant(appointment.start),
        "end": instant(appointment.end),
        "created": instant(appointment.booked_at),
        "participant": [
            {
                "actor": {"reference": f"Patient/{appointment.patient_id}"},
                "status": "declined" if cancelled else "accepted",
            },
            {
                "actor": {
                    "reference": f"Practitioner/{appointment.clinician_id}",
                    "display": appointment.clinician_name,
                },
                "status": "declined" if cancelled else "accepted",
            },
        ],
    }
    if appointment.reason:
        resource["comment"] = appointment.reason
    return resource


def schedule_resource(schedule: Schedule) -> dict[str, Any]:
    return {
        "resourceType": "Schedule",
        "id": schedule.id,
        "active": True,
        "serviceType": _kinds(schedule.kinds),
        "actor": [
            {
                "reference": f"Practitioner/{schedule.clinician_id}",
                "display": schedule.clinician_name,
            }
        ],
        "comment": f"{schedule.slot_minutes}-minute slots; times in {schedule.timezone}",
    }


def slot_resource(schedule: Schedule, start: datetime, free: bool) -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": f"{schedule.id}.{int(start.timestamp())}",
        "serviceType": _kinds(schedule.kinds),
        "schedule": {"reference": f"Schedule/{schedule.id}"},
        "status": "free" if free else "busy",
        "start": instant(start),
        "end": instant(start + timedelta(minutes=schedule.slot_minutes)),
    }


@router.get(
    "/Appointment/{appointment_id}",
    summary="Read an Appointment",
    responses=fhir_ok("Appointment"),
)
async def read_appointment(
    appointment_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    return FhirResponse(
        await read_care_resource(
            request, principal, "Appointment", appointment_id, _load_appointment
        )
    )


async def _load_appointment(conn: AsyncConnection, appointment_id: str) -> Loaded:
    appointment = await Appointments(conn).get(appointment_id)
    if appointment is None:
        return None
    return appointment.patient_id, appointment_resource(appointment)


def _range(values: list[str]) -> tuple[datetime | None, datetime | None]:
    start: datetime | None = None
    end: datetime | None = None
    for value in values:
        for bound in parse_date_param(value):
            if bound.op == "ge":
                start = bound.at if start is None else max(start, bound.at)
            else:
                end = bound.at if end is None else min(end, bound.at)
    return start, end


@router.get(
    "/Appointment",
    summary="Search Appointments by patient, practitioner, date and status",
    responses=fhir_search("Appointment"),
)
async def search_appointments(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.APPOINTMENT))
    paging = parse_paging(params)
    reference = single(params, "patient")
    patient_id = parse_reference(reference, "Patient") if reference else None
    practitioner = single(params, "practitioner")
    clinician_id = parse_reference(practitioner, "Practitioner") if practitioner else None
    status = single(params, "status")
    if status is not None and status not in {s.value for s in AppointmentStatus}:
        raise InvalidSearch("status must be booked or cancelled")
    start, end = _range(params.get("date", []))
    decisions = await search_scope(request, principal, patient_id, resource_type="Appointment")
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await Appointments(conn).search(
            patients=within,
            clinician_id=clinician_id,
            start=start,
            end=end,
            statuses=[AppointmentStatus(status)] if status else (),
            limit=paging.count + 1,
            offset=paging.offset,
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [a.patient_id for a in shown],
            resource_type="Appointment",
        )
    page = [appointment_resource(a) for a in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


@router.get("/Schedule/{schedule_id}", summary="Read a Schedule", responses=fhir_ok("Schedule"))
async def read_schedule(
    schedule_id: str, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    del principal  # any signed-in caller: a clinician's availability names no patient
    async with database.read() as conn:
        schedule = await Schedules(conn).get(schedule_id)
    if schedule is None:
        raise NotFound(f"Schedule/{schedule_id} is not known")
    return FhirResponse(schedule_resource(schedule))


@router.get("/Schedule", summary="Search Schedules by actor", responses=fhir_search("Schedule"))
async def search_schedules(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    del principal
    params = query_params(request)
    reject_unknown(params, names(search_params.SCHEDULE))
    paging = parse_paging(params)
    actor = single(params, "actor")
    clinicians = [parse_reference(actor, "Practitioner")] if actor else None
    async with database.read() as conn:
        found = await Schedules(conn).search(clinicians, paging.count + 1, paging.offset)
    page = [schedule_resource(s) for s in found[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


async def _slots(
    database: Any, schedule: Schedule, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    async with database.read() as conn:
        exceptions = await Schedules(conn).exceptions(schedule.id, start, end)
        taken = await Appointments(conn).booked_starts(schedule.clinician_id, start, end)
    free = set(free_slots(schedule, exceptions, taken, start, end))
    blocked = set(free_slots(schedule, [], set(), start, end)) - free
    return [slot_resource(schedule, s, s in free) for s in sorted(free | blocked)]


@router.get("/Slot/{slot_id}", summary="Read a Slot", responses=fhir_ok("Slot"))
async def read_slot(
    slot_id: str, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    del principal
    schedule_id, _, seconds = slot_id.rpartition(".")
    if not seconds.isdigit() or len(seconds) > 12:
        raise NotFound(f"Slot/{slot_id} is not known")
    async with database.read() as conn:
        schedule = await Schedules(conn).get(schedule_id)
    start = datetime.fromtimestamp(int(seconds), UTC)
    if schedule is None or not schedule.offers(start):
        raise NotFound(f"Slot/{slot_id} is not known")
    (slot,) = await _slots(database, schedule, start, start + timedelta(seconds=1))
    return FhirResponse(slot)


@router.get(
    "/Slot",
    summary="Search a Schedule's Slots (free and busy) by start",
    responses=fhir_search("Slot"),
)
async def search_slots(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    del principal
    params = query_params(request)
    reject_unknown(params, names(search_params.SLOT))
    paging = parse_paging(params)
    reference = single(params, "schedule")
    if reference is None:
        raise InvalidSearch("schedule is required")
    schedule_id = parse_reference(reference, "Schedule")
    status = single(params, "status")
    if status is not None and status not in ("free", "busy"):
        raise InvalidSearch("status must be free or busy")
    start, end = _range(params.get("start", []))
    start = start or datetime.now(UTC)
    end = end or start + timedelta(days=7)
    if end - start > _MAX_SLOT_RANGE:
        raise InvalidSearch("start: search at most 62 days of slots at once")
    async with database.read() as conn:
        schedule = await Schedules(conn).get(schedule_id)
    if schedule is None:
        raise NotFound(f"Schedule/{schedule_id} is not known")
    found = [
        s
        for s in await _slots(database, schedule, start, end)
        if status is None or s["status"] == status
    ]
    window = found[paging.offset : paging.offset + paging.count + 1]
    page = window[: paging.count]
    return FhirResponse(searchset(request, page, paging, len(window) > paging.count))
