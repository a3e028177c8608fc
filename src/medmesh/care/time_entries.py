"""Clinician time on a patient's care: manual entries with a reason (a phone call), set-up and
education, interactive work counted from real activity with an idle cut-off, and edits that
keep the earlier version. An entry in the future, of no or negative length, or overlapping
the same clinician's other time is refused: a clinician is in one place at a time."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from medmesh.access.identity.principals import Principal, Role
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from medmesh.domain.visits import TimeEntry, TimeKind
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.visits import TimeEntries

MAX_ENTRY = timedelta(hours=12)
MAX_REASON_CHARS = 500
ENTERED_KINDS = (TimeKind.MANUAL, TimeKind.SETUP)


def _reason(text: str | None, kind: TimeKind) -> str | None:
    reason = " ".join((text or "").split()) or None
    if reason is None and kind is TimeKind.MANUAL:
        raise InvalidRequest("say what the time was for, e.g. 'phone call about readings'")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return reason


def _check_span(start: datetime, end: datetime, now: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("times must include a zone, e.g. 2026-11-03T14:00:00Z")
    if end <= start:
        raise InvalidRequest("the entry must end after it starts (no negative or empty time)")
    if end > now:
        raise InvalidRequest("time in the future cannot be recorded; enter it once it is spent")
    if end - start > MAX_ENTRY:
        raise InvalidRequest("one entry is at most 12 hours; split longer work")


async def _check_free(
    entries: TimeEntries, clinician_id: str, start: datetime, end: datetime, skip: str | None
) -> None:
    clashes = [
        e
        for e in await entries.search(clinician_id=clinician_id, start=start, end=end)
        if e.id != skip
    ]
    if clashes:
        first = clashes[0]
        raise Conflict(
            "this overlaps your time from "
            f"{first.start.isoformat(timespec='minutes')} to "
            f"{first.end.isoformat(timespec='minutes')}; change one of them"
        )


def _kind(value: str) -> TimeKind:
    try:
        kind = TimeKind(value)
    except ValueError:
        raise InvalidRequest("kind must be manual or setup") from None
    if kind not in ENTERED_KINDS:
        raise InvalidRequest("visit and interactive time is recorded by medmesh, not entered")
    return kind


async def add_entry(
    database: Database,
    *,
    clinician: Principal,
    patient_id: str,
    kind: str,
    start: datetime,
    end: datetime,
    interactive: bool,
    reason: str | None,
    now: datetime,
) -> TimeEntry:
    if clinician.role is not Role.CLINICIAN:
        raise Forbidden("only clinicians record time on a patient's care")
    what = _kind(kind)
    _check_span(start, end, now)
    entry = TimeEntry(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        clinician_id=clinician.id,
        clinician_name=clinician.name,
        kind=what,
        start=start,
        end=end,
        interactive=interactive,
        reason=_reason(reason, what),
        source_id=None,
        created_at=now,
        updated_at=now,
        updated_by=clinician.id,
    )
    async with database.write() as conn:
        entries = TimeEntries(conn)
        await _check_free(entries, clinician.id, start, end, None)
        await entries.add(entry)
    return entry


async def edit_entry(
    database: Database,
    *,
    entry: TimeEntry,
    by: Principal,
    start: datetime | None,
    end: datetime | None,
    interactive: bool | None,
    reason: str | None,
    now: datetime,
) -> TimeEntry:
    """Change an entry (its own clinician only); the earlier version is kept."""
    if by.id != entry.clinician_id:
        raise Forbidden("only the clinician whose time it is edits an entry")
    changed = replace(
        entry,
        start=start or entry.start,
        end=end or entry.end,
        interactive=entry.interactive if interactive is None else interactive,
        reason=entry.reason if reason is None else _reason(reason, entry.kind),
        updated_at=now,
        updated_by=by.id,
    )
    _check_span(changed.start, changed.end, now)
    async with database.write() as conn:
        entries = TimeEntries(conn)
        current = await entries.get(entry.id)
        if current is None:
            raise NotFound("this time entry is not known")
        await _check_free(entries, entry.clinician_id, changed.start, changed.end, entry.id)
        await entries.replace(current, changed, by=by.id, at=now)
    return changed


async def note_activity(
    database: Database,
    *,
    clinician: Principal,
    patient_id: str,
    at: datetime,
    idle: timedelta,
) -> TimeEntry | None:
    """A care action (a message answered, a refill decided) as a moment of interactive work:
    counted like a page in use when the person is a clinician of the patient's care team
    (care/access decided the action already); None when it counts for nothing (not a
    clinician of the care team, or the moment already lies in another entry)."""
    if clinician.role is not Role.CLINICIAN:
        return None
    async with database.read() as conn:
        if not await CareTeams(conn).is_member(patient_id, clinician.id):
            return None
    try:
        return await activity(
            database, clinician=clinician, patient_id=patient_id, at=at, idle=idle
        )
    except (Conflict, Forbidden):
        return None


async def activity(
    database: Database,
    *,
    clinician: Principal,
    patient_id: str,
    at: datetime,
    idle: timedelta,
) -> TimeEntry:
    """Count a moment of interactive work (a page open and in use, a message, a refill): it
    extends the clinician's running entry for the patient unless more than `idle` passed
    since, in which case a new entry begins. Idle time is never counted."""
    if clinician.role is not Role.CLINICIAN:
        raise Forbidden("only clinicians' time is counted")
    async with database.write() as conn:
        entries = TimeEntries(conn)
        recent = [
            e
            for e in await entries.search(
                clinician_id=clinician.id, start=at - idle, end=at + timedelta(seconds=1)
            )
            if e.kind is TimeKind.INTERACTIVE and e.patient_id == patient_id and e.end <= at
        ]
        if recent:
            running = recent[-1]
            extended = replace(running, end=at, updated_at=at)
            await entries.extend(running.id, at)
            return extended
        others = await entries.search(clinician_id=clinician.id, start=at, end=at)
        if any(e.start <= at < e.end for e in others):
            raise Conflict("this time is already counted in another entry")
        entry = TimeEntry(
            id=str(uuid.uuid4()),
            patient_id=patient_id,
            clinician_id=clinician.id,
            clinician_name=clinician.name,
            kind=TimeKind.INTERACTIVE,
            start=at,
            end=at,
            interactive=False,
            reason=None,
            source_id=None,
            created_at=at,
            updated_at=at,
            updated_by=clinician.id,
        )
        await entries.add(entry)
    return entry
