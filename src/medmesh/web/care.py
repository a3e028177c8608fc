"""The patient's medications and appointments (`/me/care`) and the clinician's refill queue
and upcoming visits (on `/inbox`), through the same care rules and access decisions as the
JSON API. A refused form is shown again with what to change; nothing is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import appointments as booking
from medmesh.care import medications as refills
from medmesh.care.time_entries import note_activity
from medmesh.domain.appointments import AppointmentStatus, VisitKind, free_slots
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from medmesh.domain.medications import MedicationStatus, RefillStatus
from medmesh.domain.timestamps import parse_rfc3339
from medmesh.http.deps import BusDep, DatabaseDep, database_of, settings_of
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.consents import CareTeams
from medmesh.store.medications import Medications, RefillRequests
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import care_principal, panel_patients, signed_in_patient
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, signed_in
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_REFUSED = (InvalidRequest, Conflict, Forbidden)
SLOT_DAYS = 14


async def _care_page(
    request: Request, user: SessionUser, *, error: str | None = None, status_code: int = 200
) -> Response:
    patient_id = str(user.patient_id)
    now = datetime.now(UTC)
    async with database_of(request).read() as conn:
        medications = await Medications(conn).search(
            within=[patient_id], statuses=[MedicationStatus.ACTIVE]
        )
        requests = await RefillRequests(conn).search(within=[patient_id])
        appointments = await Appointments(conn).search(
            patients=[patient_id], start=now, statuses=[AppointmentStatus.BOOKED]
        )
        team = [user_id for user_id, _ in await CareTeams(conn).members(patient_id)]
        schedules = await Schedules(conn).search(team)
        offers = []
        for schedule in schedules:
            until = now + timedelta(days=min(SLOT_DAYS, schedule.book_ahead_days))
            exceptions = await Schedules(conn).exceptions(schedule.id, now, until)
            taken = await Appointments(conn).booked_starts(schedule.clinician_id, now, until)
            offers.append((schedule, free_slots(schedule, exceptions, taken, now, until)[:40]))
    names = {m.id: m.name for m in medications}
    open_for = {r.medication_id for r in requests if r.status is RefillStatus.OPEN}
    context: dict[str, Any] = {
        "user": user,
        "nav": "care",
        "medications": medications,
        "open_for": open_for,
        "requests": list(reversed(requests))[:20],
        "names": names,
        "appointments": appointments,
        "offers": offers,
        "error": error,
    }
    return page(request, "me_care.html", context, status_code)


@router.get("/me/care")
async def my_care(request: Request) -> Response:
    user = await signed_in_patient(request)
    principal = care_principal(request, user)
    for resource in ("MedicationRequest", "Appointment"):
        await care_access.decide(
            request, principal, str(user.patient_id), resource, Interaction.SEARCH
        )
    return await _care_page(request, user)


async def _form(request: Request) -> dict[str, str]:
    await session.check_csrf(request)
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.post("/me/care/refills")
async def ask_for_refill(request: Request, database: DatabaseDep, bus: BusDep) -> Response:
    form = await _form(request)
    user = await signed_in_patient(request)
    principal = care_principal(request, user)
    async with database.read() as conn:
        medication = await Medications(conn).get(form.get("medication", ""))
    if medication is None or medication.patient_id != user.patient_id:
        raise NotFound("This medication is not on your list.")
    try:
        await care_access.decide(
            request,
            principal,
            medication.patient_id,
            "MedicationRequest",
            Interaction.CREATE,
            actors=(care_access.SELF,),
            resource_id=medication.id,
        )
        await refills.request_refill(
            database,
            bus,
            medication=medication,
            patient=principal,
            note=form.get("note"),
            at=datetime.now(UTC),
        )
    except _REFUSED as refusal:
        return await _care_page(request, user, error=str(refusal), status_code=400)
    return RedirectResponse("/me/care", status_code=303)


@router.post("/me/care/appointments")
async def book_visit(request: Request, database: DatabaseDep, bus: BusDep) -> Response:
    form = await _form(request)
    user = await signed_in_patient(request)
    principal = care_principal(request, user)
    try:
        await care_access.decide(
            request, principal, str(user.patient_id), "Appointment", Interaction.CREATE
        )
        schedule_id, _, start_text = form.get("slot", "").partition("|")
        async with database.read() as conn:
            schedule = await Schedules(conn).get(schedule_id)
        if schedule is None:
            raise InvalidRequest("choose one of the times offered")
        try:
            start = parse_rfc3339(start_text)
        except ValueError:
            raise InvalidRequest("choose one of the times offered") from None
        try:
            kind = VisitKind(form.get("kind", ""))
        except ValueError:
            raise InvalidRequest("choose in person or video") from None
        await booking.book(
            database,
            bus,
            schedule=schedule,
            patient_id=str(user.patient_id),
            start=start,
            kind=kind,
            reason=form.get("reason"),
            by=principal,
            now=datetime.now(UTC),
        )
    except _REFUSED as refusal:
        return await _care_page(request, user, error=str(refusal), status_code=400)
    return RedirectResponse("/me/care", status_code=303)


@router.post("/me/care/appointments/{appointment_id}/cancel")
async def cancel_visit(
    request: Request, appointment_id: str, database: DatabaseDep, bus: BusDep
) -> Response:
    await _form(request)
    user = await signed_in_patient(request)
    principal = care_principal(request, user)
    async with database.read() as conn:
        appointment = await Appointments(conn).get(appointment_id)
        schedule = (
            None if appointment is None else await Schedules(conn).get(appointment.schedule_id)
        )
    if appointment is None or schedule is None or appointment.patient_id != user.patient_id:
        raise NotFound("This appointment is not yours, or does not exist.")
    try:
        await care_access.decide(
            request,
            principal,
            appointment.patient_id,
            "Appointment",
            Interaction.UPDATE,
            resource_id=appointment_id,
        )
        await booking.cancel(
            database,
            bus,
            appointment=appointment,
            schedule=schedule,
            by=principal,
            now=datetime.now(UTC),
        )
    except _REFUSED as refusal:
        return await _care_page(request, user, error=str(refusal), status_code=400)
    return RedirectResponse("/me/care", status_code=303)


async def queue_and_visits(request: Request, user: SessionUser) -> dict[str, Any]:
    """The clinician's refill queue (oldest first) and their visits of the next 7 days."""
    decisions = await panel_patients(request, user)
    mine = [p for p, d in decisions.items() if d.basis == care_access.CARE_TEAM]
    now = datetime.now(UTC)
    async with database_of(request).read() as conn:
        queue = await RefillRequests(conn).search(within=mine, statuses=[RefillStatus.OPEN])
        medications = {r.medication_id: await Medications(conn).get(r.medication_id) for r in queue}
        visits = await Appointments(conn).search(
            patients=mine,
            clinician_id=user.user_id,
            start=now,
            end=now + timedelta(days=7),
            statuses=[AppointmentStatus.BOOKED],
        )
        people = {p.id: p for p in await Patients(conn).get_many(mine)}
    return {
        "queue": [
            (r, medications.get(r.medication_id), people.get(r.patient_id), r.overdue(now))
            for r in queue
        ],
        "visits": [(a, people.get(a.patient_id)) for a in visits],
    }


@router.post("/inbox/refills/{refill_id}/{answer}")
async def answer_refill(
    request: Request,
    refill_id: str,
    answer: str,
    database: DatabaseDep,
    bus: BusDep,
    user: SessionUser = Depends(signed_in),
) -> Response:
    form = await _form(request)
    principal = care_principal(request, user)
    async with database.read() as conn:
        refill = await RefillRequests(conn).get(refill_id)
    if refill is None or answer not in ("approve", "deny", "visit"):
        raise NotFound("This refill request does not exist.")
    await care_access.decide(
        request,
        principal,
        refill.patient_id,
        "MedicationRequest",
        Interaction.UPDATE,
        actors=(care_access.CARE_TEAM,),
        resource_id=refill_id,
        hide=True,
    )
    now = datetime.now(UTC)
    try:
        if answer == "approve":
            try:
                count = int(form.get("refills", "0"))
            except ValueError:
                raise InvalidRequest("refills must be a whole number") from None
            await refills.approve(
                database,
                bus,
                refill_id=refill_id,
                clinician=principal,
                refills=count,
                dosage=None,
                at=now,
            )
        else:
            status = RefillStatus.DENIED if answer == "deny" else RefillStatus.VISIT_REQUESTED
            await refills.answer(
                database,
                bus,
                refill_id=refill_id,
                clinician=principal,
                status=status,
                reason=form.get("reason"),
                at=now,
            )
    except _REFUSED as refusal:
        from medmesh.web.messages import inbox_page

        return await inbox_page(request, user, error=str(refusal), status_code=400)
    await note_activity(
        database,
        clinician=principal,
        patient_id=refill.patient_id,
        at=now,
        idle=timedelta(minutes=settings_of(request).time_idle_minutes),
    )
    return RedirectResponse("/inbox", status_code=303)
