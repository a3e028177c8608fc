"""Schedules and appointments: the rules of booking, cancelling and rescheduling, each step in
one transaction, and the event that tells the other side (ids and status only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from medmesh.access.identity.principals import Principal, Role
from medmesh.domain.appointments import (
    WEEKDAYS,
    Appointment,
    AppointmentStatus,
    Schedule,
    ScheduleException,
    VisitKind,
    WeeklyHours,
)
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest
from medmesh.events.bus import EventBus
from medmesh.events.model import APPOINTMENT, Event
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database

MAX_REASON_CHARS = 500


def _clock(text: str, field: str) -> time:
    try:
        moment = time.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{field} must be a time of day, e.g. 09:00") from None
    return moment.replace(second=0, microsecond=0)


def new_schedule(
    *,
    clinician: Principal,
    timezone: str,
    slot_minutes: int,
    kinds: Sequence[str],
    hours: Sequence[tuple[str, str, str]],
    book_ahead_days: int,
    cancel_hours: int,
    at: datetime,
) -> Schedule:
    """A schedule from what a clinician entered; each mistake named."""
    if clinician.role is not Role.CLINICIAN:
        raise Forbidden("only clinicians publish a schedule")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("timezone must be an IANA time zone, e.g. Europe/Berlin") from None
    if not 5 <= slot_minutes <= 240:
        raise InvalidRequest("slot_minutes must be between 5 and 240")
    try:
        visit_kinds = tuple(dict.fromkeys(VisitKind(k) for k in kinds))
    except ValueError:
        raise InvalidRequest("kinds are in-person and/or video") from None
    if not visit_kinds:
        raise InvalidRequest("give at least one kind of visit: in-person or video")
    weekly = []
    for day, start, end in hours:
        if day not in WEEKDAYS:
            raise InvalidRequest(f"day must be one of {', '.join(WEEKDAYS)}")
        opens, closes = _clock(start, "start"), _clock(end, "end")
        if closes <= opens:
            raise InvalidRequest(f"the hours of {day} end before they start")
        weekly.append(WeeklyHours(WEEKDAYS.index(day), opens, closes))
    if not 1 <= book_ahead_days <= 365:
        raise InvalidRequest("book_ahead_days must be between 1 and 365")
    if not 0 <= cancel_hours <= 168:
        raise InvalidRequest("cancel_hours must be between 0 and 168")
    return Schedule(
        id=str(uuid.uuid4()),
        clinician_id=clinician.id,
        clinician_name=clinician.name,
        timezone=timezone,
        slot_minutes=slot_minutes,
        kinds=visit_kinds,
        hours=tuple(weekly),
        book_ahead_days=book_ahead_days,
        cancel_hours=cancel_hours,
        updated_at=at,
    )


async def block_time(
    database: Database, clinician: Principal, start: datetime, end: datetime
) -> ScheduleException:
    """Block [start, end) in the clinician's own schedule (a holiday, a meeting)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("start and end must include a time zone")
    if end <= start:
        raise InvalidRequest("end must be after start")
    async with database.write() as conn:
        schedule = await Schedules(conn).of_clinician(clinician.id)
        if schedule is None:
            raise InvalidRequest("publish a schedule first")
        exception = ScheduleException(
            str(uuid.uuid4()), schedule.id, start.astimezone(UTC), end.astimezone(UTC)
        )
        await Schedules(conn).add_exception(exception)
    return exception


def _check_slot(schedule: Schedule, start: datetime, kind: VisitKind, now: datetime) -> None:
    if kind not in schedule.kinds:
        raise InvalidRequest(
            f"this clinician offers {', '.join(k.value for k in schedule.kinds)} visits"
        )
    if start.tzinfo is None:
        raise InvalidRequest("start must include a time zone, e.g. 2026-12-07T09:00:00Z")
    if start <= now:
        raise InvalidRequest("this time is in the past; choose a later one")
    if start > now + timedelta(days=schedule.book_ahead_days):
        raise InvalidRequest(
            f"appointments can be booked at most {schedule.book_ahead_days} days ahead"
        )
    if not schedule.offers(start.astimezone(UTC)):
        raise InvalidRequest("this is not one of the clinician's appointment times")


async def _announce(bus: EventBus, appointment: Appointment) -> None:
    await bus.publish(
        Event(
            APPOINTMENT,
            appointment.patient_id,
            {
                "appointment_id": appointment.id,
                "status": appointment.status.value,
                "clinician_id": appointment.clinician_id,
                "start": appointment.start.isoformat(),  # for reminders; no health data
            },
        )
    )


def _reason(text: str | None) -> str | None:
    reason = " ".join((text or "").split()) or None
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return reason


async def book(
    database: Database,
    bus: EventBus,
    *,
    schedule: Schedule,
    patient_id: str,
    start: datetime,
    kind: VisitKind,
    reason: str | None,
    by: Principal,
    now: datetime,
) -> Appointment:
    start = start.astimezone(UTC) if start.tzinfo is not None else start
    _check_slot(schedule, start, kind, now)
    end = start + timedelta(minutes=schedule.slot_minutes)
    appointment = Appointment(
        id=str(uuid.uuid4()),
        schedule_id=schedule.id,
        clinician_id=schedule.clinician_id,
        clinician_name=schedule.clinician_name,
        patient_id=patient_id,
        start=start,
        end=end,
        kind=kind,
        status=AppointmentStatus.BOOKED,
        reason=_reason(reason),
        booked_at=now,
        booked_by=by.id,
    )
    async with database.write() as conn:
        if not await CareTeams(conn).is_member(patient_id, schedule.clinician_id):
            raise Forbidden("appointments are booked with a clinician of the patient's care team")
        exceptions = await Schedules(conn).exceptions(schedule.id, start, end)
        if exceptions:
            raise InvalidRequest("the clinician is not available at this time; choose another")
        await Appointments(conn).book(appointment)  # Conflict when the slot is taken
    await _announce(bus, appointment)
    return appointment


def _may_change(appointment: Appointment, schedule: Schedule, by: Principal, now: datetime) -> None:
    if appointment.status is not AppointmentStatus.BOOKED:
        raise Conflict("this appointment is already cancelled")
    if appointment.start <= now:
        raise InvalidRequest("this appointment has already begun")
    if by.role is Role.PATIENT and appointment.start - now < timedelta(hours=schedule.cancel_hours):
        raise InvalidRequest(
            f"appointments can be changed online up to {schedule.cancel_hours} hours before; "
            "please call the clinic"
        )


async def cancel(
    database: Database,
    bus: EventBus,
    *,
    appointment: Appointment,
    schedule: Schedule,
    by: Principal,
    now: datetime,
) -> Appointment:
    _may_change(appointment, schedule, by, now)
    async with database.write() as conn:
        if not await Appointments(conn).cancel(appointment.id, by.id, now):
            raise Conflict("this appointment is already cancelled")
    cancelled = replace(
        appointment, status=AppointmentStatus.CANCELLED, cancelled_at=now, cancelled_by=by.id
    )
    await _announce(bus, cancelled)
    return cancelled


async def reschedule(
    database: Database,
    bus: EventBus,
    *,
    appointment: Appointment,
    schedule: Schedule,
    start: datetime,
    by: Principal,
    now: datetime,
) -> Appointment:
    """Move to another slot of the same schedule: the old one is freed and the new one taken in
    one transaction, so a refusal (taken, outside the rules) leaves the old one booked."""
    _may_change(appointment, schedule, by, now)
    start = start.astimezone(UTC) if start.tzinfo is not None else start
    _check_slot(schedule, start, appointment.kind, now)
    moved = replace(
        appointment,
        id=str(uuid.uuid4()),
        start=start,
        end=start + timedelta(minutes=schedule.slot_minutes),
        booked_at=now,
        booked_by=by.id,
    )
    async with database.write() as conn:
        if await Schedules(conn).exceptions(schedule.id, moved.start, moved.end):
            raise InvalidRequest("the clinician is not available at this time; choose another")
        if not await Appointments(conn).cancel(appointment.id, by.id, now):
            raise Conflict("this appointment is already cancelled")
        await Appointments(conn).book(moved)
    await _announce(
        bus,
        replace(
            appointment, status=AppointmentStatus.CANCELLED, cancelled_at=now, cancelled_by=by.id
        ),
    )
    await _announce(bus, moved)
    return moved
