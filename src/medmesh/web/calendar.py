"""The clinician's calendar (`/inbox/calendar`): a day or week grid of their booked visits and
open slots, in the viewer's time zone; and the form that publishes their availability
(`/inbox/schedule`: weekly hours, slot length, in person or video, booking rules, blocked
times), through the same rules as the JSON API (care/appointments.py).

The grid is laid out on the server, so it needs the viewer's zone: the page asks the browser
(`?tz=`, set by dashboard.js) and otherwise uses the clinician's schedule zone, saying which."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.http import audit_results
from medmesh.care import appointments as booking
from medmesh.domain.appointments import (
    WEEKDAYS,
    Appointment,
    AppointmentStatus,
    Schedule,
    ScheduleException,
    free_slots,
)
from medmesh.domain.errors import Forbidden, InvalidRequest
from medmesh.http.deps import DatabaseDep, database_of
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import care_principal, panel_patients, principal_of
from medmesh.web.responses import WebRoute, plain_refusal
from medmesh.web.session import SessionUser, signed_in
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
RANGES_PER_DAY = 2  # a morning and an afternoon, say
DEFAULT_HOURS = range(8, 18)
# The care rules name fields as the API spells them; the form says them as its labels do.
FORM_WORDS = {
    "slot_minutes": "Slot length",
    "book_ahead_days": "How far ahead patients may book",
    "cancel_hours": "How late patients may cancel",
    "timezone": "Time zone",
    "kinds are": "Visits are",
}


def viewer_zone(raw: str | None, schedule: Schedule | None) -> ZoneInfo:
    for candidate in (raw, schedule.timezone if schedule else None):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _day(raw: str | None, today: date) -> date:
    try:
        return date.fromisoformat(raw) if raw else today
    except ValueError:
        return today


@dataclass(slots=True)
class Cell:
    booked: list[tuple[Appointment, str]] = field(default_factory=list)  # with the name shown
    free: list[datetime] = field(default_factory=list)
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Grid:
    days: list[date]
    hours: list[int]
    cells: dict[tuple[date, int], Cell]
    zone: ZoneInfo


def lay_out(
    days: list[date],
    zone: ZoneInfo,
    visits: list[tuple[Appointment, str]],
    free: list[datetime],
    blocked: list[ScheduleException],
) -> Grid:
    """Visits and free slots in (day, hour) cells of the viewer's zone; the hours shown span
    what there is (08–18 when the range is empty)."""
    cells: dict[tuple[date, int], Cell] = {}
    for appointment, name in visits:
        local = appointment.start.astimezone(zone)
        cells.setdefault((local.date(), local.hour), Cell()).booked.append((appointment, name))
    for start in free:
        local = start.astimezone(zone)
        cells.setdefault((local.date(), local.hour), Cell()).free.append(start)
    hours = sorted({h for _, h in cells} | set(DEFAULT_HOURS))
    for exception in blocked:
        for day in days:
            for hour in hours:
                opens = datetime.combine(day, time(hour), zone)
                if exception.blocks(opens, opens + timedelta(hours=1)):
                    cells.setdefault((day, hour), Cell()).blocked = True
    return Grid(days, list(range(hours[0], hours[-1] + 1)), cells, zone)


async def _calendar(request: Request, user: SessionUser) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with database_of(request).read() as conn:
        schedule = await Schedules(conn).of_clinician(user.user_id)
    zone = viewer_zone(request.query_params.get("tz"), schedule)
    view = "day" if request.query_params.get("view") == "day" else "week"
    anchor = _day(request.query_params.get("date"), now.astimezone(zone).date())
    first = anchor if view == "day" else anchor - timedelta(days=anchor.weekday())
    days = [first + timedelta(days=i) for i in range(1 if view == "day" else 7)]
    start = datetime.combine(days[0], time(0), zone).astimezone(UTC)
    end = datetime.combine(days[-1] + timedelta(days=1), time(0), zone).astimezone(UTC)
    decisions = await panel_patients(request, user)
    async with database_of(request).read() as conn:
        visits = await Appointments(conn).search(
            clinician_id=user.user_id, start=start, end=end, statuses=[AppointmentStatus.BOOKED]
        )
        shown = [a.patient_id for a in visits if a.patient_id in decisions]
        people = {p.id: p for p in await Patients(conn).get_many(shown)}
        free: list[datetime] = []
        blocked: list[ScheduleException] = []
        if schedule is not None:
            blocked = await Schedules(conn).exceptions(schedule.id, start, end)
            taken = await Appointments(conn).booked_starts(user.user_id, start, end)
            free = free_slots(schedule, blocked, taken, max(start, now), end)
    # A visit names its patient only where the policy lets this clinician see them.
    await audit_results(
        request,
        principal_of(request, user),
        decisions,
        sorted(set(shown)),
        resource_type="Appointment",
    )
    named = [
        (a, f"{people[a.patient_id].given} {people[a.patient_id].family}")
        if a.patient_id in people
        else (a, "A patient")
        for a in visits
    ]
    step = timedelta(days=1 if view == "day" else 7)
    zone_param = f"&tz={zone.key}"
    return {
        "clinician": user,
        "nav": "inbox",
        "view": view,
        "grid": lay_out(days, zone, named, free, blocked),
        "schedule": schedule,
        "zone": zone.key,
        "day_names": DAY_NAMES,
        "previous": f"/inbox/calendar?view={view}&date={(first - step).isoformat()}{zone_param}",
        "next": f"/inbox/calendar?view={view}&date={(first + step).isoformat()}{zone_param}",
        "other_view": (
            f"/inbox/calendar?view={'week' if view == 'day' else 'day'}"
            f"&date={anchor.isoformat()}{zone_param}"
        ),
        "zone_from_browser": bool(request.query_params.get("tz")),
    }


@router.get("/inbox/calendar")
async def calendar(request: Request, user: SessionUser = Depends(signed_in)) -> Response:
    return page(request, "calendar.html", await _calendar(request, user))


# --- publishing availability ---------------------------------------------------------------


def _schedule_form(schedule: Schedule | None) -> dict[str, str]:
    """The form's fields for the schedule as it is (or a clinic's usual week, for a first)."""
    if schedule is None:
        form = {"timezone": "", "slot_minutes": "30", "book_ahead_days": "30"}
        form |= {"cancel_hours": "24", "kind-in-person": "on", "kind-video": "on"}
        for day in WEEKDAYS[:5]:
            form |= {f"{day}-start-0": "09:00", f"{day}-end-0": "12:00"}
            form |= {f"{day}-start-1": "13:00", f"{day}-end-1": "17:00"}
        return form
    form = {
        "timezone": schedule.timezone,
        "slot_minutes": str(schedule.slot_minutes),
        "book_ahead_days": str(schedule.book_ahead_days),
        "cancel_hours": str(schedule.cancel_hours),
    }
    form |= {f"kind-{k.value}": "on" for k in schedule.kinds}
    seen: dict[int, int] = {}
    for hours in schedule.hours:
        index = seen.get(hours.weekday, 0)
        if index < RANGES_PER_DAY:
            day = WEEKDAYS[hours.weekday]
            form[f"{day}-start-{index}"] = hours.start.isoformat("minutes")
            form[f"{day}-end-{index}"] = hours.end.isoformat("minutes")
        seen[hours.weekday] = index + 1
    return form


def _number(form: dict[str, str], name: str, label: str) -> int:
    value = form.get(name, "").strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidRequest(f"{label} must be a whole number")
    return int(value)


def _hours(form: dict[str, str]) -> list[tuple[str, str, str]]:
    hours = []
    for day, name in zip(WEEKDAYS, DAY_NAMES, strict=True):
        for index in range(RANGES_PER_DAY):
            opens = form.get(f"{day}-start-{index}", "").strip()
            closes = form.get(f"{day}-end-{index}", "").strip()
            if opens or closes:
                if not (opens and closes):
                    raise InvalidRequest(f"give both a start and an end for {name}")
                hours.append((day, opens, closes))
    return hours


async def _schedule_page(
    request: Request,
    user: SessionUser,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    now = datetime.now(UTC)
    async with database_of(request).read() as conn:
        schedule = await Schedules(conn).of_clinician(user.user_id)
        blocked = (
            await Schedules(conn).exceptions(schedule.id, now, now + timedelta(days=365))
            if schedule is not None
            else []
        )
    context = {
        "clinician": user,
        "nav": "inbox",
        "schedule": schedule,
        "form": form if form is not None else _schedule_form(schedule),
        "weekdays": list(zip(WEEKDAYS, DAY_NAMES, strict=True)),
        "ranges": range(RANGES_PER_DAY),
        "blocked": blocked,
        "error": error,
        "saved": saved or request.query_params.get("saved") == "1",
    }
    return page(request, "schedule.html", context, status_code)


@router.get("/inbox/schedule")
async def schedule_form(request: Request, user: SessionUser = Depends(signed_in)) -> Response:
    return await _schedule_page(request, user)


async def _fields(request: Request) -> dict[str, str]:
    await session.check_csrf(request)
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.post("/inbox/schedule")
async def publish_schedule(
    request: Request, database: DatabaseDep, user: SessionUser = Depends(signed_in)
) -> Response:
    form = await _fields(request)
    principal = care_principal(request, user)
    try:
        schedule = booking.new_schedule(
            clinician=principal,
            timezone=form.get("timezone", "").strip(),
            slot_minutes=_number(form, "slot_minutes", "Slot length"),
            kinds=[k for k in ("in-person", "video") if form.get(f"kind-{k}")],
            hours=_hours(form),
            book_ahead_days=_number(form, "book_ahead_days", "How far ahead patients may book"),
            cancel_hours=_number(form, "cancel_hours", "How late patients may cancel"),
            at=datetime.now(UTC),
        )
    except (InvalidRequest, Forbidden) as refusal:
        message = plain_refusal(refusal, FORM_WORDS)
        return await _schedule_page(request, user, form=form, error=message, status_code=400)
    async with database.write() as conn:
        await Schedules(conn).put(schedule)
    return RedirectResponse("/inbox/schedule?saved=1", status_code=303)


@router.post("/inbox/schedule/exceptions")
async def block_time(
    request: Request, database: DatabaseDep, user: SessionUser = Depends(signed_in)
) -> Response:
    """A blocked time, entered as local date-times in the schedule's own zone."""
    form = await _fields(request)
    async with database.read() as conn:
        schedule = await Schedules(conn).of_clinician(user.user_id)
    try:
        if schedule is None:
            raise InvalidRequest("publish your hours first")
        try:
            start = datetime.fromisoformat(form.get("start", "")).replace(tzinfo=schedule.zone)
            end = datetime.fromisoformat(form.get("end", "")).replace(tzinfo=schedule.zone)
        except ValueError:
            raise InvalidRequest("give the blocked time's start and end, date and time") from None
        await booking.block_time(database, care_principal(request, user), start, end)
    except InvalidRequest as refusal:
        message = plain_refusal(refusal, FORM_WORDS)
        return await _schedule_page(request, user, error=message, status_code=400)
    return RedirectResponse("/inbox/schedule?saved=1", status_code=303)
