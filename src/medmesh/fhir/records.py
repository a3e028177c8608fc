"""One patient's record as FHIR resources, a bounded piece at a time: what `$everything`
pages through and what `$export` writes. Nothing here holds more than one piece in memory."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir import resources
from medmesh.fhir.appointments import appointment_resource
from medmesh.fhir.communications import communication
from medmesh.fhir.encounters import charge_item_resources, encounter_resources
from medmesh.fhir.flags import flag
from medmesh.fhir.imaging_studies import imaging_study
from medmesh.fhir.medication_requests import medication_request
from medmesh.store.alerts import alerts_for_export
from medmesh.store.appointments import Appointments
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.imaging import ImagingRecords
from medmesh.store.medications import Medications
from medmesh.store.messages import Messages, SentBetween
from medmesh.store.observations import (
    ExportWindow,
    StoredObservation,
    TimeBound,
    observations_after,
)
from medmesh.store.registry import Assignments, Devices, Patients

# The resource types of a patient's record, in the order $everything returns them.
RECORD_TYPES = (
    "Patient",
    "Device",
    "Flag",
    "MedicationRequest",
    "Appointment",
    "Encounter",
    "ChargeItem",
    "Communication",
    "ImagingStudy",
    "Observation",
)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which parts of a record to take.

    `start`/`end`: clinical time (Observation.effective, Flag opened) in [start, end).
    `since`: received or changed at or after (FHIR `_since`; Patient and Device have no
    change time in medmesh and are always taken). `until`: received before (an export's
    transactionTime, so its files are one consistent snapshot).
    """

    types: tuple[str, ...] = RECORD_TYPES
    start: datetime | None = None
    end: datetime | None = None
    since: datetime | None = None
    until: datetime | None = None

    def observation_window(self) -> ExportWindow:
        bounds: list[TimeBound] = []
        if self.start is not None:
            bounds.append(TimeBound("ge", self.start))
        if self.end is not None:
            bounds.append(TimeBound("lt", self.end))
        return ExportWindow(tuple(bounds), self.since, self.until)


def parse_types(value: str | None) -> tuple[str, ...]:
    """`_type` (comma-separated) as record types in RECORD_TYPES order; absent: all of them."""
    if value is None:
        return RECORD_TYPES
    asked = {t.strip() for t in value.split(",")}
    unknown = sorted(asked - set(RECORD_TYPES))
    if unknown:
        raise InvalidSearch(
            f"_type: unsupported resource type(s) {', '.join(unknown)}; "
            f"supported: {', '.join(RECORD_TYPES)}"
        )
    return tuple(t for t in RECORD_TYPES if t in asked)


def parse_instant(value: str, name: str) -> datetime:
    """A FHIR instant (with time zone), e.g. `_since`."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSearch(f"{name} must be a FHIR instant, e.g. 2026-11-25T08:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidSearch(f"{name} must include a time zone, e.g. 2026-11-25T08:00:00Z")
    return moment.astimezone(UTC)


async def patient_resource(conn: AsyncConnection, patient_id: str) -> dict[str, Any] | None:
    try:
        return resources.patient(await Patients(conn).get(patient_id))
    except NotFound:
        return None


async def device_resources(
    conn: AsyncConnection,
    patient_id: str,
    limit: int,
    offset: int = 0,
    visible: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The devices ever assigned to the patient. A device's patient reference is kept only
    when its current holder is this patient or in `visible` (the other patients of the same
    export): one patient's record never names a patient the reader is not given."""
    found = await Devices(conn).search(patient_id=patient_id, limit=limit, offset=offset)
    now = datetime.now(UTC)
    rendered = []
    for device in found:
        history = await Assignments(conn).for_device(device.id)
        current = next((a.patient_id for a in history if a.covers(now)), None)
        status = await DeviceStatuses(conn).get(device.id)
        holder = current if current == patient_id or current in visible else None
        rendered.append(resources.device(device, holder, status))
    return rendered


async def flag_resources(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    found = await alerts_for_export(
        conn,
        patient_id,
        opened_from=wanted.start,
        opened_before=wanted.end,
        changed_since=wanted.since,
        limit=limit,
        offset=offset,
    )
    return [flag(a) for a in found]


async def communication_resources(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The patient's messages oldest first; `start`/`end` and `_since` bound when they were
    sent (a message is never changed once sent, but for when it was read)."""
    sent: list[SentBetween] = []
    for lower in (wanted.start, wanted.since):
        if lower is not None:
            sent.append(SentBetween("ge", lower))
    for upper in (wanted.end, wanted.until):
        if upper is not None:
            sent.append(SentBetween("lt", upper))
    found = await Messages(conn).search(
        within=[patient_id], sent=sent, limit=limit, offset=offset, oldest_first=True
    )
    return [communication(m, t) for m, t in found]


async def imaging_study_resources(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The patient's imaging studies (newest first), each with its DICOMweb endpoint as a
    path on this server: the record carries the study, never the pixels."""
    found = await ImagingRecords(conn).search(within=[patient_id], limit=limit, offset=offset)
    return [imaging_study(s) for s in found]


async def medication_resources(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The patient's MedicationRequests oldest first; `_since` and an export's snapshot time
    bound when they were written (a renewal is a new one)."""
    found = await Medications(conn).for_export(
        patient_id, since=wanted.since, until=wanted.until, limit=limit, offset=offset
    )
    return [medication_request(m) for m in found]


async def appointment_resources(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The patient's appointments by start; `start`/`end` bound the visit's time."""
    found = await Appointments(conn).search(
        patients=[patient_id], start=wanted.start, end=wanted.end, limit=limit, offset=offset
    )
    return [appointment_resource(a) for a in found]


async def visit_resources(
    kind: str,
    conn: AsyncConnection,
    patient_id: str,
    wanted: RecordFilter,
    limit: int,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Video visits (`Encounter`) or clinician time (`ChargeItem`), by start."""
    read = encounter_resources if kind == "Encounter" else charge_item_resources
    return await read(conn, patient_id, wanted.start, wanted.end, limit, offset)


async def observation_page(
    conn: AsyncConnection,
    patient_id: str,
    wanted: RecordFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredObservation]:
    """The next `limit` observations after the key `after` (effective, id), oldest first."""
    return await observations_after(conn, patient_id, wanted.observation_window(), after, limit)
