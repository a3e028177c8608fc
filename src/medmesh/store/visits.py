"""Repositories of video visits and clinician time entries. Notes, reasons and the earlier
versions of edited entries are sealed with the patient's key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.visits import TimeEntry, TimeKind, Visit
from medmesh.store.database import cipher_of
from medmesh.store.schema import time_entries, time_entry_revisions, visits

_NOTE = "visits.note"
_REASON = "time_entries.reason"
_BEFORE = "time_entry_revisions.before"


class Visits:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _all(self, query: Select[tuple[object, ...]]) -> list[Visit]:
        rows = (await self._conn.execute(query)).mappings().all()
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        found = []
        for r in rows:
            key = keys.get(r["patient_id"])
            if key is None:
                continue
            note = (
                None if r["note"] is None else key.open_text(r["note"], _NOTE, r["appointment_id"])
            )
            found.append(
                Visit(
                    appointment_id=r["appointment_id"],
                    patient_id=r["patient_id"],
                    clinician_id=r["clinician_id"],
                    started_at=r["started_at"],
                    admitted_at=r["admitted_at"],
                    ended_at=r["ended_at"],
                    note=note,
                    note_updated_at=r["note_updated_at"],
                    chat_thread_id=r["chat_thread_id"],
                )
            )
        return found

    async def get(self, appointment_id: str) -> Visit | None:
        found = await self._all(select(visits).where(visits.c.appointment_id == appointment_id))
        return found[0] if found else None

    async def search(
        self,
        *,
        patients: Collection[str],
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[Visit]:
        if not patients:
            return []
        query = select(visits).where(visits.c.patient_id.in_(list(patients)))
        if start is not None:
            query = query.where(visits.c.started_at >= start)
        if end is not None:
            query = query.where(visits.c.started_at < end)
        query = query.order_by(visits.c.started_at, visits.c.appointment_id)
        return await self._all(query.limit(limit).offset(offset))

    async def begin(self, visit: Visit) -> Visit:
        """The visit's row, created at the first join (a later join finds it)."""
        existing = await self.get(visit.appointment_id)
        if existing is not None:
            return existing
        await self._conn.execute(
            visits.insert().values(
                appointment_id=visit.appointment_id,
                patient_id=visit.patient_id,
                clinician_id=visit.clinician_id,
                started_at=visit.started_at,
            )
        )
        return visit

    async def admitted(self, appointment_id: str, at: datetime) -> None:
        await self._conn.execute(
            update(visits)
            .where(visits.c.appointment_id == appointment_id, visits.c.admitted_at.is_(None))
            .values(admitted_at=at)
        )

    async def left(self, appointment_id: str, at: datetime) -> None:
        await self._conn.execute(
            update(visits).where(visits.c.appointment_id == appointment_id).values(ended_at=at)
        )

    async def set_chat_thread(self, appointment_id: str, thread_id: str) -> None:
        await self._conn.execute(
            update(visits)
            .where(visits.c.appointment_id == appointment_id)
            .values(chat_thread_id=thread_id)
        )

    async def write_note(self, visit: Visit, note: str, at: datetime) -> None:
        key = await cipher_of(self._conn).key(visit.patient_id)
        await self._conn.execute(
            update(visits)
            .where(visits.c.appointment_id == visit.appointment_id)
            .values(note=key.seal_text(note, _NOTE, visit.appointment_id), note_updated_at=at)
        )


def _entry_values(entry: TimeEntry) -> dict[str, object]:
    return {
        "clinician_id": entry.clinician_id,
        "clinician_name": entry.clinician_name,
        "kind": entry.kind.value,
        "start": entry.start,
        "end": entry.end,
        "interactive": entry.interactive,
        "source_id": entry.source_id,
        "updated_at": entry.updated_at,
        "updated_by": entry.updated_by,
    }


class TimeEntries:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def _entry(self, r: RowMapping, reason: str | None) -> TimeEntry:
        return TimeEntry(
            id=r["id"],
            patient_id=r["patient_id"],
            clinician_id=r["clinician_id"],
            clinician_name=r["clinician_name"],
            kind=TimeKind(r["kind"]),
            start=r["start"],
            end=r["end"],
            interactive=bool(r["interactive"]),
            reason=reason,
            source_id=r["source_id"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            updated_by=r["updated_by"],
        )

    async def _all(self, query: Select[tuple[object, ...]]) -> list[TimeEntry]:
        rows = (await self._conn.execute(query)).mappings().all()
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        found = []
        for r in rows:
            key = keys.get(r["patient_id"])
            if key is None:
                continue
            reason = None if r["reason"] is None else key.open_text(r["reason"], _REASON, r["id"])
            found.append(self._entry(r, reason))
        return found

    async def add(self, entry: TimeEntry) -> None:
        key = await cipher_of(self._conn).key(entry.patient_id)
        reason = None if entry.reason is None else key.seal_text(entry.reason, _REASON, entry.id)
        await self._conn.execute(
            time_entries.insert().values(
                id=entry.id,
                patient_id=entry.patient_id,
                created_at=entry.created_at,
                reason=reason,
                **_entry_values(entry),
            )
        )

    async def replace(self, before: TimeEntry, after: TimeEntry, *, by: str, at: datetime) -> None:
        """Store `after` over `before`, keeping `before` (sealed) as a revision."""
        key = await cipher_of(self._conn).key(before.patient_id)
        revision_id = str(uuid.uuid4())
        earlier = json.dumps(
            {
                "kind": before.kind.value,
                "start": before.start.isoformat(),
                "end": before.end.isoformat(),
                "interactive": before.interactive,
                "reason": before.reason,
                "updated_by": before.updated_by,
                "updated_at": before.updated_at.isoformat(),
            }
        )
        await self._conn.execute(
            time_entry_revisions.insert().values(
                id=revision_id,
                entry_id=before.id,
                patient_id=before.patient_id,
                changed_by=by,
                changed_at=at,
                before=key.seal_text(earlier, _BEFORE, revision_id),
            )
        )
        reason = None if after.reason is None else key.seal_text(after.reason, _REASON, after.id)
        await self._conn.execute(
            update(time_entries)
            .where(time_entries.c.id == before.id)
            .values(reason=reason, **_entry_values(after))
        )

    async def extend(self, entry_id: str, end: datetime) -> None:
        """Move a running interactive entry's end (activity, not an edit: no revision)."""
        await self._conn.execute(
            update(time_entries)
            .where(time_entries.c.id == entry_id)
            .values(end=end, updated_at=end)
        )

    async def revisions(self, entry: TimeEntry) -> list[dict[str, object]]:
        """The earlier versions of an entry, oldest first, each with who changed it and when."""
        key = await cipher_of(self._conn).key(entry.patient_id)
        rows = await self._conn.execute(
            select(time_entry_revisions)
            .where(time_entry_revisions.c.entry_id == entry.id)
            .order_by(time_entry_revisions.c.changed_at)
        )
        return [
            {
                "changed_by": r.changed_by,
                "changed_at": r.changed_at.isoformat(),
                "before": json.loads(key.open_text(r.before, _BEFORE, r.id)),
            }
            for r in rows
        ]

    async def get(self, entry_id: str) -> TimeEntry | None:
        found = await self._all(select(time_entries).where(time_entries.c.id == entry_id))
        return found[0] if found else None

    async def search(
        self,
        *,
        patients: Collection[str] | None = None,
        clinician_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        kinds: Collection[TimeKind] = (),
        limit: int = 1000,
        offset: int = 0,
    ) -> list[TimeEntry]:
        """Entries that overlap [start, end), earliest first."""
        query = select(time_entries)
        if patients is not None:
            if not patients:
                return []
            query = query.where(time_entries.c.patient_id.in_(list(patients)))
        if clinician_id is not None:
            query = query.where(time_entries.c.clinician_id == clinician_id)
        if start is not None:
            query = query.where(time_entries.c.end > start)
        if end is not None:
            query = query.where(time_entries.c.start < end)
        if kinds:
            query = query.where(time_entries.c.kind.in_([k.value for k in kinds]))
        query = query.order_by(time_entries.c.start, time_entries.c.id).limit(limit).offset(offset)
        return await self._all(query)
