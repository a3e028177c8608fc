"""The demo's video visit and RPM month: a video visit open now with the demo clinician (a
second browser signed in as the patient joins it), and last month's clinician time and set-up
so the RPM report and the program view show billable codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from medmesh.domain.appointments import Appointment, AppointmentStatus, VisitKind
from medmesh.domain.errors import Conflict
from medmesh.domain.visits import TimeEntry, TimeKind
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.database import Database
from medmesh.store.users import Users
from medmesh.store.visits import TimeEntries


async def demo_visit_and_time(database: Database, patient_id: str, clinician: str) -> str | None:
    """A video appointment that began a minute ago (its id), and time entries in the past
    month; nothing when the clinician has no schedule or the patient has time already."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    async with database.read() as conn:
        account = await Users(conn).find_by_username(clinician)
        schedule = None if account is None else await Schedules(conn).of_clinician(account.id)
        if account is None or schedule is None:
            return None
        if await TimeEntries(conn).search(patients=[patient_id], limit=1):
            return None
    appointment = Appointment(
        id=str(uuid.uuid4()),
        schedule_id=schedule.id,
        clinician_id=account.id,
        clinician_name=account.display_name,
        patient_id=patient_id,
        start=now - timedelta(minutes=1),
        end=now + timedelta(minutes=59),
        kind=VisitKind.VIDEO,
        status=AppointmentStatus.BOOKED,
        reason="Demo video visit",
        booked_at=now,
        booked_by=account.id,
    )
    month_start = (now.replace(day=1) - timedelta(days=1)).replace(day=3, hour=15, minute=0)
    spans = [
        (TimeKind.SETUP, month_start, 20, False, "device set-up and education"),
        (TimeKind.MANUAL, month_start + timedelta(days=5), 14, True, "phone call about readings"),
        (TimeKind.MANUAL, month_start + timedelta(days=12), 12, True, "medication review call"),
    ]
    booked: str | None = appointment.id
    async with database.write() as conn:
        try:
            await Appointments(conn).book(appointment)
        except Conflict:  # the clinician has a visit at this minute already
            booked = None
        for kind, start, minutes, interactive, reason in spans:
            await TimeEntries(conn).add(
                TimeEntry(
                    id=str(uuid.uuid4()),
                    patient_id=patient_id,
                    clinician_id=account.id,
                    clinician_name=account.display_name,
                    kind=kind,
                    start=start,
                    end=start + timedelta(minutes=minutes),
                    interactive=interactive,
                    reason=reason,
                    source_id=None,
                    created_at=now,
                    updated_at=now,
                    updated_by=account.id,
                )
            )
    return booked
