"""Video visits and clinician time: the values the care package, the store and FHIR share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Visit:
    """A video appointment once someone joined it."""

    appointment_id: str
    patient_id: str
    clinician_id: str
    started_at: datetime
    admitted_at: datetime | None = None
    ended_at: datetime | None = None
    note: str | None = None  # the clinician's visit note: sealed
    note_updated_at: datetime | None = None
    chat_thread_id: str | None = None


class TimeKind(StrEnum):
    VISIT = "visit"  # from joining and leaving a video visit
    INTERACTIVE = "interactive"  # patient page, messages, refills, counted from activity
    MANUAL = "manual"  # entered by the clinician with a reason (a phone call)
    SETUP = "setup"  # device set-up and patient education (CPT 99453)


@dataclass(frozen=True, slots=True)
class TimeEntry:
    id: str
    patient_id: str
    clinician_id: str
    clinician_name: str
    kind: TimeKind
    start: datetime
    end: datetime
    interactive: bool  # a real-time interactive communication with the patient
    reason: str | None  # sealed
    source_id: str | None
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end
