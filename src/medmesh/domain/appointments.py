"""Clinicians' availability (Schedule, Slot) and patients' appointments.

A schedule says when a clinician sees patients: weekly hours in the clinician's own time zone,
a slot length, in person or by video, how far ahead patients may book and how late they may
cancel. Slots are not stored: they are the schedule's hours cut into slot-length pieces, less
exceptions and booked appointments. Times are stored and compared in UTC; the weekly hours are
wall-clock times in the schedule's zone, so a 09:00 slot stays at 09:00 across daylight-saving
changes (its UTC time moves).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class VisitKind(StrEnum):
    IN_PERSON = "in-person"
    VIDEO = "video"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class WeeklyHours:
    weekday: int  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    clinician_id: str
    clinician_name: str
    timezone: str  # IANA, e.g. Europe/Berlin
    slot_minutes: int
    kinds: tuple[VisitKind, ...]
    hours: tuple[WeeklyHours, ...]
    book_ahead_days: int  # patients book at most this far ahead
    cancel_hours: int  # patients cancel or reschedule at least this long before
    updated_at: datetime

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def slot_starts(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The UTC starts of the schedule's slots in [start, end), oldest first. A wall-clock
        time that does not exist on a day (the hour skipped when clocks go forward) makes no
        slot; one that happens twice (clocks go back) makes one, at its first occurrence."""
        zone, step = self.zone, timedelta(minutes=self.slot_minutes)
        day = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date() + timedelta(days=1)
        found: list[datetime] = []
        while day <= last:
            for hours in self.hours:
                if hours.weekday != day.weekday():
                    continue
                local = datetime.combine(day, hours.start)
                closing = datetime.combine(day, hours.end)
                while local + step <= closing:
                    moment = local.replace(tzinfo=zone)
                    utc = moment.astimezone(UTC)
                    exists = utc.astimezone(zone).replace(tzinfo=None) == local
                    if exists and start <= utc < end:
                        found.append(utc)
                    local += step
            day += timedelta(days=1)
        yield from sorted(set(found))

    def offers(self, start: datetime) -> bool:
        """Whether `start` (UTC) begins one of the schedule's slots."""
        return start in set(self.slot_starts(start, start + timedelta(seconds=1)))


@dataclass(frozen=True, slots=True)
class ScheduleException:
    id: str
    schedule_id: str
    start: datetime
    end: datetime

    def blocks(self, start: datetime, end: datetime) -> bool:
        return start < self.end and self.start < end


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    schedule_id: str
    clinician_id: str
    clinician_name: str
    patient_id: str
    start: datetime
    end: datetime
    kind: VisitKind
    status: AppointmentStatus
    reason: str | None  # the patient's words: sealed
    booked_at: datetime
    booked_by: str
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None


def free_slots(
    schedule: Schedule,
    exceptions: Sequence[ScheduleException],
    taken: set[datetime],
    start: datetime,
    end: datetime,
) -> list[datetime]:
    step = timedelta(minutes=schedule.slot_minutes)
    return [
        s
        for s in schedule.slot_starts(start, end)
        if s not in taken and not any(x.blocks(s, s + step) for x in exceptions)
    ]


def local_day(moment: datetime, zone: str) -> date:
    return moment.astimezone(ZoneInfo(zone)).date()
