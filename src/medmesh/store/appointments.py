"""Repositories for schedules and appointments. A patient's reason for a visit is sealed with
their key; one booked appointment per clinician and start is the database's rule (a partial
unique index): a second booking is an `IntegrityError`, turned into `Conflict` here."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime, time

from sqlalchemy import Select, delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Schedule,
    ScheduleException,
    VisitKind,
    WeeklyHours,
)
from medmesh.domain.errors import Conflict
from medmesh.store.database import cipher_of
from medmesh.store.schema import appointments, schedule_exceptions, schedules, users

_REASON = "appointments.reason"
SLOT_TAKEN = "this time was just booked by someone else; choose another"


def _schedule(row: RowMapping, name: str) -> Schedule:
    return Schedule(
        id=row["id"],
        clinician_id=row["clinician_id"],
        clinician_name=name,
        timezone=row["timezone"],
        slot_minutes=row["slot_minutes"],
        kinds=tuple(VisitKind(k) for k in row["kinds"].split(",") if k),
        hours=tuple(
            WeeklyHours(h["weekday"], time.fromisoformat(h["start"]), time.fromisoformat(h["end"]))
            for h in json.loads(row["hours"])
        ),
        book_ahead_days=row["book_ahead_days"],
        cancel_hours=row["cancel_hours"],
        updated_at=row["updated_at"],
    )


class Schedules:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def put(self, schedule: Schedule) -> None:
        """Create or replace the clinician's schedule (its id stays)."""
        values = {
            "timezone": schedule.timezone,
            "slot_minutes": schedule.slot_minutes,
            "kinds": ",".join(k.value for k in schedule.kinds),
            "hours": json.dumps(
                [
                    {
                        "weekday": h.weekday,
                        "start": h.start.isoformat("minutes"),
                        "end": h.end.isoformat("minutes"),
                    }
                    for h in schedule.hours
                ]
            ),
            "book_ahead_days": schedule.book_ahead_days,
            "cancel_hours": schedule.cancel_hours,
            "updated_at": schedule.updated_at,
        }
        changed = await self._conn.execute(
            update(schedules)
            .where(schedules.c.clinician_id == schedule.clinician_id)
            .values(values)
        )
        if not changed.rowcount:
            await self._conn.execute(
                schedules.insert().values(
                    id=schedule.id, clinician_id=schedule.clinician_id, **values
                )
            )

    async def _all(self, query: Select[tuple[object, ...]]) -> list[Schedule]:
        rows = (await self._conn.execute(query)).mappings().all()
        return [_schedule(r, r["display_name"]) for r in rows]

    def _query(self) -> Select[tuple[object, ...]]:
        return select(schedules, users.c.display_name).join(
            users, users.c.id == schedules.c.clinician_id
        )

    async def get(self, schedule_id: str) -> Schedule | None:
        found = await self._all(self._query().where(schedules.c.id == schedule_id))
        return found[0] if found else None

    async def of_clinician(self, clinician_id: str) -> Schedule | None:
        found = await self._all(self._query().where(schedules.c.clinician_id == clinician_id))
        return found[0] if found else None

    async def search(
        self, clinician_ids: Collection[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[Schedule]:
        query = self._query().order_by(schedules.c.id)
        if clinician_ids is not None:
            query = query.where(schedules.c.clinician_id.in_(list(clinician_ids)))
        return await self._all(query.limit(limit).offset(offset))

    async def add_exception(self, exception: ScheduleException) -> None:
        await self._conn.execute(
            schedule_exceptions.insert().values(
                id=exception.id,
                schedule_id=exception.schedule_id,
                start=exception.start,
                end=exception.end,
            )
        )

    async def exceptions(
        self, schedule_id: str, start: datetime, end: datetime
    ) -> list[ScheduleException]:
        rows = await self._conn.execute(
            select(schedule_exceptions).where(
                schedule_exceptions.c.schedule_id == schedule_id,
                schedule_exceptions.c.start < end,
                schedule_exceptions.c.end > start,
            )
        )
        return [ScheduleException(r.id, r.schedule_id, r.start, r.end) for r in rows]

    async def remove_exception(self, schedule_id: str, exception_id: str) -> bool:
        result = await self._conn.execute(
            delete(schedule_exceptions).where(
                schedule_exceptions.c.id == exception_id,
                schedule_exceptions.c.schedule_id == schedule_id,
            )
        )
        return bool(result.rowcount)


class Appointments:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def book(self, appointment: Appointment) -> None:
        """Store a booked appointment; Conflict if the clinician is booked at that start."""
        key = await cipher_of(self._conn).key(appointment.patient_id)
        reason = appointment.reason
        statement = appointments.insert().values(
            id=appointment.id,
            schedule_id=appointment.schedule_id,
            clinician_id=appointment.clinician_id,
            clinician_name=appointment.clinician_name,
            patient_id=appointment.patient_id,
            start=appointment.start,
            end=appointment.end,
            kind=appointment.kind.value,
            status=appointment.status.value,
            reason=None if reason is None else key.seal_text(reason, _REASON, appointment.id),
            booked_at=appointment.booked_at,
            booked_by=appointment.booked_by,
        )
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(statement)
        except IntegrityError:
            raise Conflict(SLOT_TAKEN) from None

    async def _all(self, query: Select[tuple[object, ...]]) -> list[Appointment]:
        rows = (await self._conn.execute(query)).mappings().all()
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        found = []
        for r in rows:
            if r["patient_id"] not in keys:
                continue
            sealed = r["reason"]
            reason = (
                None
                if sealed is None
                else keys[r["patient_id"]].open_text(sealed, _REASON, r["id"])
            )
            found.append(
                Appointment(
                    id=r["id"],
                    schedule_id=r["schedule_id"],
                    clinician_id=r["clinician_id"],
                    clinician_name=r["clinician_name"],
                    patient_id=r["patient_id"],
                    start=r["start"],
                    end=r["end"],
                    kind=VisitKind(r["kind"]),
                    status=AppointmentStatus(r["status"]),
                    reason=reason,
                    booked_at=r["booked_at"],
                    booked_by=r["booked_by"],
                    cancelled_at=r["cancelled_at"],
                    cancelled_by=r["cancelled_by"],
                )
            )
        return found

    async def get(self, appointment_id: str) -> Appointment | None:
        found = await self._all(select(appointments).where(appointments.c.id == appointment_id))
        return found[0] if found else None

    async def search(
        self,
        *,
        patients: Collection[str] | None = None,
        clinician_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        statuses: Collection[AppointmentStatus] = (),
        limit: int = 500,
        offset: int = 0,
    ) -> list[Appointment]:
        """Appointments by start time, earliest first."""
        query = select(appointments)
        if patients is not None:
            if not patients:
                return []
            query = query.where(appointments.c.patient_id.in_(list(patients)))
        if clinician_id is not None:
            query = query.where(appointments.c.clinician_id == clinician_id)
        if start is not None:
            query = query.where(appointments.c.end > start)
        if end is not None:
            query = query.where(appointments.c.start < end)
        if statuses:
            query = query.where(appointments.c.status.in_([s.value for s in statuses]))
        query = query.order_by(appointments.c.start, appointments.c.id)
        return await self._all(query.limit(limit).offset(offset))

    async def booked_starts(
        self, clinician_id: str, start: datetime, end: datetime
    ) -> set[datetime]:
        rows = await self._conn.execute(
            select(appointments.c.start).where(
                appointments.c.clinician_id == clinician_id,
                appointments.c.status == AppointmentStatus.BOOKED.value,
                appointments.c.start >= start,
                appointments.c.start < end,
            )
        )
        return {r[0] for r in rows}

    async def cancel(self, appointment_id: str, by: str, at: datetime) -> bool:
        result = await self._conn.execute(
            update(appointments)
            .where(
                appointments.c.id == appointment_id,
                appointments.c.status == AppointmentStatus.BOOKED.value,
            )
            .values(status=AppointmentStatus.CANCELLED.value, cancelled_at=at, cancelled_by=by)
        )
        return bool(result.rowcount)
