"""What the clinician's patient page shows of care between visits: the conversations (unread
for the care team), the medication list (active, stopped, open refill requests) and the
appointments (upcoming, past). Shown on the page's own access decision: only when it covers
the whole record (a consent limited to some data categories covers no care data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import record
from medmesh.access.policy.decision import Decision
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.domain.appointments import Appointment, AppointmentStatus
from medmesh.domain.medications import Medication, MedicationStatus, RefillRequest, RefillStatus
from medmesh.domain.messages import Side, Thread
from medmesh.store.appointments import Appointments
from medmesh.store.medications import Medications, RefillRequests
from medmesh.store.messages import Messages
from medmesh.web.access import principal_of
from medmesh.web.session import SessionUser

PAST_SHOWN = timedelta(days=90)
CARE_RESOURCES = ("Communication", "MedicationRequest", "Appointment")


@dataclass(frozen=True, slots=True)
class PatientCare:
    threads: list[Thread]
    unread: int
    active: list[Medication]
    stopped: list[Medication]  # stopped by the care team (renewed ones are not listed)
    open_refills: list[tuple[RefillRequest, str]]  # with the medication's name
    upcoming: list[Appointment]
    past: list[Appointment]  # of the last PAST_SHOWN, most recent first, cancelled included
    may_act: bool  # the viewer is on the patient's care team: the forms are shown


async def patient_care(
    conn: AsyncConnection, patient_id: str, now: datetime, *, may_act: bool
) -> PatientCare:
    threads = await Messages(conn).threads(patient_id, Side.CARE_TEAM)
    medications = await Medications(conn).search(
        within=[patient_id], statuses=[MedicationStatus.ACTIVE, MedicationStatus.STOPPED]
    )
    names = {m.id: m.name for m in medications}
    refills = await RefillRequests(conn).search(within=[patient_id], statuses=[RefillStatus.OPEN])
    upcoming = await Appointments(conn).search(
        patients=[patient_id], start=now, statuses=[AppointmentStatus.BOOKED], limit=50
    )
    recent = await Appointments(conn).search(
        patients=[patient_id], start=now - PAST_SHOWN, end=now, limit=200
    )
    return PatientCare(
        threads=threads,
        unread=sum(t.unread for t in threads),
        active=[m for m in medications if m.status is MedicationStatus.ACTIVE],
        stopped=[m for m in medications if m.status is MedicationStatus.STOPPED],
        open_refills=[(r, names.get(r.medication_id, "")) for r in refills],
        upcoming=upcoming,
        past=sorted((a for a in recent if a.start < now), key=lambda a: a.start, reverse=True),
        may_act=may_act,
    )


async def shown_care(
    request: Request,
    user: SessionUser,
    decision: Decision,
    conn: AsyncConnection,
    patient_id: str,
    now: datetime,
) -> PatientCare | None:
    """The care section on the page's decision, each part audited as shown; None when the
    decision does not cover the whole record."""
    if decision.categories is not None:
        return None
    principal = principal_of(request, user)
    for resource_type in CARE_RESOURCES:
        await record(
            request,
            principal,
            interaction=Interaction.SEARCH,
            permitted=True,
            patient_id=patient_id,
            resource_type=resource_type,
            subtype="search",
            basis=decision.basis,
            purpose=decision.purpose,
        )
    return await patient_care(
        conn, patient_id, now, may_act=decision.basis == care_access.CARE_TEAM
    )
