"""The monthly RPM report: for each patient and a calendar month (or any 30-day period the
clinic chooses), the days with device data (counted in the clinic's time zone), set-up and
education, treatment-management minutes and whether any was a real-time interactive
communication, and what that makes billable (care/rpm_rules.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.care.rpm_rules import Billing, RpmCodes, bill
from medmesh.domain.errors import InvalidRequest
from medmesh.domain.visits import TimeEntry, TimeKind
from medmesh.store.schema import device_assignments, observations
from medmesh.store.visits import TimeEntries

PERIOD_DAYS = 30


@dataclass(frozen=True, slots=True)
class Period:
    first_day: date  # in the clinic's zone
    last_day: date  # inclusive
    zone: str
    label: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(0), ZoneInfo(self.zone)).astimezone(UTC)

    @property
    def end(self) -> datetime:
        after = self.last_day + timedelta(days=1)
        return datetime.combine(after, time(0), ZoneInfo(self.zone)).astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("the time zone must be an IANA zone, e.g. America/Chicago") from None


def calendar_month(text: str, zone: str, now: datetime) -> Period:
    """The month `YYYY-MM`; refused before it has begun."""
    try:
        first = date.fromisoformat(f"{text}-01")
    except ValueError:
        raise InvalidRequest("month must be YYYY-MM, e.g. 2026-11") from None
    _refuse_future(first, zone, now)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Period(first, following - timedelta(days=1), zone, first.strftime("%B %Y"))


def thirty_days(text: str, zone: str, now: datetime) -> Period:
    """The 30 days from `YYYY-MM-DD`; refused before the first has begun."""
    try:
        first = date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("start must be a date YYYY-MM-DD") from None
    _refuse_future(first, zone, now)
    last = first + timedelta(days=PERIOD_DAYS - 1)
    return Period(first, last, zone, f"{first.isoformat()} to {last.isoformat()}")


def _refuse_future(first: date, zone: str, now: datetime) -> None:
    if now.astimezone(_zone(zone)).date() < first:
        raise InvalidRequest(
            f"the period beginning {first.isoformat()} has not begun yet; "
            "a report covers days that have started"
        )


@dataclass(frozen=True, slots=True)
class PatientPeriod:
    patient_id: str
    period: Period
    enrolled: date | None  # the first device assignment, in the clinic's zone
    days: tuple[date, ...]  # with device data
    setup_on: date | None  # set-up and education in this period
    minutes: int  # treatment management, whole minutes
    interactive: bool  # at least one real-time interactive communication
    entries: tuple[TimeEntry, ...]
    billing: Billing


def _clipped_seconds(entry: TimeEntry, start: datetime, end: datetime) -> float:
    return max(0.0, (min(entry.end, end) - max(entry.start, start)).total_seconds())


async def report(
    conn: AsyncConnection, patient_ids: Sequence[str], period: Period, codes: RpmCodes
) -> list[PatientPeriod]:
    start, end, zone = period.start, period.end, ZoneInfo(period.zone)
    if not patient_ids:
        return []
    days: dict[str, set[date]] = defaultdict(set)
    rows = await conn.execute(
        select(observations.c.patient_id, observations.c.effective).where(
            observations.c.patient_id.in_(list(patient_ids)),
            observations.c.effective >= start,
            observations.c.effective < end,
        )
    )
    for patient_id, effective in rows:
        days[patient_id].add(effective.astimezone(zone).date())
    enrolled_rows = await conn.execute(
        select(device_assignments.c.patient_id, func.min(device_assignments.c.start))
        .where(device_assignments.c.patient_id.in_(list(patient_ids)))
        .group_by(device_assignments.c.patient_id)
    )
    enrolled = {p: s.astimezone(zone).date() for p, s in enrolled_rows if s is not None}
    entries: dict[str, list[TimeEntry]] = defaultdict(list)
    for entry in await TimeEntries(conn).search(patients=patient_ids, start=start, end=end):
        entries[entry.patient_id].append(entry)
    found = []
    for patient_id in patient_ids:
        theirs = entries[patient_id]
        setups = [e for e in theirs if e.kind is TimeKind.SETUP]
        managing = [e for e in theirs if e.kind is not TimeKind.SETUP]
        minutes = int(sum(_clipped_seconds(e, start, end) for e in managing) // 60)
        interactive = any(e.interactive for e in managing)
        count = len(days[patient_id])
        found.append(
            PatientPeriod(
                patient_id=patient_id,
                period=period,
                enrolled=enrolled.get(patient_id),
                days=tuple(sorted(days[patient_id])),
                setup_on=setups[0].start.astimezone(zone).date() if setups else None,
                minutes=minutes,
                interactive=interactive,
                entries=tuple(theirs),
                billing=bill(
                    codes,
                    days=count,
                    setup_done=bool(setups),
                    minutes=minutes,
                    interactive=interactive,
                ),
            )
        )
    return found
