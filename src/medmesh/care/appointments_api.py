"""The JSON API of appointments: clinicians publish their schedule (their own; it holds no
patient data), anyone signed in sees free slots, and patients and their care team book, cancel
and reschedule. Appointment routes decide through the access policy (resource type
`Appointment`) and are audited. Times are RFC 3339 with a zone in, UTC out, with the
schedule's zone beside them for showing local times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import audit_results, require_principal, require_role, search_scope
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import appointments as care
from medmesh.domain.appointments import (
    WEEKDAYS,
    Appointment,
    AppointmentStatus,
    Schedule,
    VisitKind,
    free_slots,
)
from medmesh.domain.errors import InvalidRequest, InvalidSearch, NotFound
from medmesh.domain.timestamps import parse_rfc3339
from medmesh.http.deps import BusDep, DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.appointments import Appointments, Schedules

router = APIRouter(prefix="/api/v1", tags=["appointments"], responses=ERROR_RESPONSES)

RESOURCE = "Appointment"
_MAX_RANGE = timedelta(days=62)


class Hours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: str = Field(max_length=3, description="mon … sun")
    start: str = Field(max_length=5, description="HH:MM, the schedule's local time")
    end: str = Field(max_length=5)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Berlin")
    slot_minutes: int = Field(30, ge=5, le=240)
    kinds: list[str] = Field(default=["in-person", "video"], max_length=2)
    hours: list[Hours] = Field(max_length=50)
    book_ahead_days: int = Field(30, ge=1, le=365)
    cancel_hours: int = Field(24, ge=0, le=168)


class ExceptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(max_length=40)
    end: str = Field(max_length=40)


class Booking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: str = Field(max_length=36)
    schedule: str = Field(max_length=36)
    start: str = Field(max_length=40, description="the slot's start, RFC 3339")
    kind: str = Field(max_length=16, description="in-person or video")
    reason: str | None = Field(None, max_length=care.MAX_REASON_CHARS)


class Move(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(max_length=40)


def _instant(text: str, field: str) -> datetime:
    try:
        return parse_rfc3339(text).astimezone(UTC)
    except ValueError:
        raise InvalidRequest(f"{field} must be an RFC 3339 time with a zone") from None


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "clinician": {"id": schedule.clinician_id, "name": schedule.clinician_name},
        "timezone": schedule.timezone,
        "slot_minutes": schedule.slot_minutes,
        "kinds": [k.value for k in schedule.kinds],
        "hours": [
            {
                "day": WEEKDAYS[h.weekday],
                "start": h.start.isoformat("minutes"),
                "end": h.end.isoformat("minutes"),
            }
            for h in schedule.hours
        ],
        "book_ahead_days": schedule.book_ahead_days,
        "cancel_hours": schedule.cancel_hours,
    }


def appointment_json(appointment: Appointment, timezone: str | None = None) -> dict[str, Any]:
    found = {
        "id": appointment.id,
        "patient_id": appointment.patient_id,
        "schedule_id": appointment.schedule_id,
        "clinician": {"id": appointment.clinician_id, "name": appointment.clinician_name},
        "start": appointment.start.isoformat(),
        "end": appointment.end.isoformat(),
        "kind": appointment.kind.value,
        "status": appointment.status.value,
        "reason": appointment.reason,
        "cancelled_at": appointment.cancelled_at.isoformat() if appointment.cancelled_at else None,
    }
    if timezone is not None:
        found["timezone"] = timezone
    return found


def _kind(value: str) -> VisitKind:
    try:
        return VisitKind(value)
    except ValueError:
        raise InvalidRequest("kind must be in-person or video") from None


async def _schedule(request: Request, schedule_id: str) -> Schedule:
    async with database_of(request).read() as conn:
        schedule = await Schedules(conn).get(schedule_id)
    if schedule is None:
        raise NotFound("this schedule is not known")
    return schedule


@router.put("/schedule", summary="Publish or change the caller's own schedule (clinicians)")
async def put_schedule(
    body: ScheduleIn,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    require_role(principal, Role.CLINICIAN)
    schedule = care.new_schedule(
        clinician=principal,
        timezone=body.timezone,
        slot_minutes=body.slot_minutes,
        kinds=body.kinds,
        hours=[(h.day, h.start, h.end) for h in body.hours],
        book_ahead_days=body.book_ahead_days,
        cancel_hours=body.cancel_hours,
        at=datetime.now(UTC),
    )
    async with database.write() as conn:
        await Schedules(conn).put(schedule)
        stored = await Schedules(conn).of_clinician(principal.id)
    assert stored is not None
    return schedule_json(stored)


@router.post(
    "/schedule/exceptions",
    status_code=201,
    summary="Block a time in the caller's schedule (holidays, a meeting)",
)
async def add_exception(
    body: ExceptionIn,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    require_role(principal, Role.CLINICIAN)
    start, end = _instant(body.start, "start"), _instant(body.end, "end")
    exception = await care.block_time(database, principal, start, end)
    return {"id": exception.id, "start": start.isoformat(), "end": end.isoformat()}


@router.get("/schedules/{schedule_id}/slots", summary="Free slots of a schedule in a range")
async def list_slots(
    schedule_id: str,
    request: Request,
    database: DatabaseDep,
    start: str | None = Query(None, max_length=40, description="from (default: now)"),
    end: str | None = Query(None, max_length=40, description="until (default: 7 days later)"),
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    del principal  # any signed-in caller: availability names no patient
    schedule = await _schedule(request, schedule_id)
    now = datetime.now(UTC)
    begin = _instant(start, "start") if start else now
    until = _instant(end, "end") if end else begin + timedelta(days=7)
    if until <= begin or until - begin > _MAX_RANGE:
        raise InvalidSearch("end must be after start, and at most 62 days later")
    begin = max(begin, now)
    until = min(until, now + timedelta(days=schedule.book_ahead_days))
    async with database.read() as conn:
        exceptions = await Schedules(conn).exceptions(schedule.id, begin, until)
        taken = await Appointments(conn).booked_starts(schedule.clinician_id, begin, until)
    step = timedelta(minutes=schedule.slot_minutes)
    slots = free_slots(schedule, exceptions, taken, begin, until) if until > begin else []
    return {
        "schedule": schedule_json(schedule),
        "slots": [{"start": s.isoformat(), "end": (s + step).isoformat()} for s in slots],
    }


async def _appointment(
    request: Request, principal: Principal, appointment_id: str, interaction: Interaction
) -> tuple[Appointment, Schedule]:
    async with database_of(request).read() as conn:
        appointment = await Appointments(conn).get(appointment_id)
        schedule = (
            None if appointment is None else await Schedules(conn).get(appointment.schedule_id)
        )
    if appointment is None or schedule is None:
        raise NotFound("this appointment is not known")
    await care_access.decide(
        request,
        principal,
        appointment.patient_id,
        RESOURCE,
        interaction,
        resource_id=appointment_id,
        hide=True,
    )
    return appointment, schedule


@router.post("/appointments", status_code=201, summary="Book a slot for a patient")
async def book_appointment(
    body: Booking,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await care_access.decide(
        request,
        principal,
        body.patient,
        RESOURCE,
        Interaction.CREATE,
        refusal="only the patient and their care team book their appointments",
    )
    schedule = await _schedule(request, body.schedule)
    appointment = await care.book(
        database,
        bus,
        schedule=schedule,
        patient_id=body.patient,
        start=_instant(body.start, "start"),
        kind=_kind(body.kind),
        reason=body.reason,
        by=principal,
        now=datetime.now(UTC),
    )
    return appointment_json(appointment, schedule.timezone)


@router.get("/appointments", summary="A patient's appointments, or the caller's calendar")
async def list_appointments(
    request: Request,
    database: DatabaseDep,
    patient: str | None = Query(None, max_length=36),
    start: str | None = Query(None, max_length=40),
    end: str | None = Query(None, max_length=40),
    mine: bool = Query(False, description="only the calling clinician's own appointments"),
    status: AppointmentStatus | None = None,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    begin = _instant(start, "start") if start else None
    until = _instant(end, "end") if end else None
    decisions = await search_scope(request, principal, patient, resource_type=RESOURCE)
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await Appointments(conn).search(
            patients=within,
            clinician_id=principal.id if mine else None,
            start=begin,
            end=until,
            statuses=[status] if status else (),
        )
    if patient is None:
        await audit_results(
            request, principal, decisions, [a.patient_id for a in found], resource_type=RESOURCE
        )
    return {"appointments": [appointment_json(a) for a in found]}


@router.post("/appointments/{appointment_id}/cancel", summary="Cancel an appointment")
async def cancel_appointment(
    appointment_id: str,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    appointment, schedule = await _appointment(
        request, principal, appointment_id, Interaction.UPDATE
    )
    cancelled = await care.cancel(
        database,
        bus,
        appointment=appointment,
        schedule=schedule,
        by=principal,
        now=datetime.now(UTC),
    )
    return appointment_json(cancelled, schedule.timezone)


@router.post(
    "/appointments/{appointment_id}/reschedule",
    summary="Move an appointment to another slot of the same schedule",
)
async def reschedule_appointment(
    appointment_id: str,
    body: Move,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    appointment, schedule = await _appointment(
        request, principal, appointment_id, Interaction.UPDATE
    )
    moved = await care.reschedule(
        database,
        bus,
        appointment=appointment,
        schedule=schedule,
        start=_instant(body.start, "start"),
        by=principal,
        now=datetime.now(UTC),
    )
    return appointment_json(moved, schedule.timezone)
