"""Queries for the schedule checks: which devices are assigned now and when each was last
heard from, and how many readings a patient took of a measure in a period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.schema import device_assignments, device_status, observations


@dataclass(frozen=True, slots=True)
class MonitoredDevice:
    device_id: str
    patient_id: str
    last_seen: datetime | None  # None: never heard from


class Monitoring:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def assigned_devices(self, at: datetime) -> list[MonitoredDevice]:
        """Devices assigned to a patient at `at`, with when each was last heard from."""
        query = (
            select(
                device_assignments.c.device_id,
                device_assignments.c.patient_id,
                device_status.c.last_seen,
            )
            .select_from(
                device_assignments.outerjoin(
                    device_status, device_status.c.device_id == device_assignments.c.device_id
                )
            )
            .where(
                device_assignments.c.start <= at,
                or_(device_assignments.c.end.is_(None), device_assignments.c.end > at),
            )
            .order_by(device_assignments.c.patient_id, device_assignments.c.device_id)
        )
        rows = (await self._conn.execute(query)).all()
        return [MonitoredDevice(device, patient, seen) for device, patient, seen in rows]

    async def codes_sent(self, patient_id: str, device_id: str, since: datetime) -> set[str]:
        """Codes of the device's readings for the patient since `since`."""
        query = (
            select(observations.c.code)
            .where(
                observations.c.patient_id == patient_id,
                observations.c.device_id == device_id,
                observations.c.effective >= since,
            )
            .distinct()
        )
        return set((await self._conn.execute(query)).scalars())

    async def count_readings(
        self, patient_id: str, codes: Sequence[str], start: datetime, end: datetime
    ) -> int:
        """Readings of these codes taken in [start, end)."""
        query = select(func.count()).where(
            and_(
                observations.c.patient_id == patient_id,
                observations.c.code.in_(list(codes)),
                observations.c.effective >= start,
                observations.c.effective < end,
            )
        )
        return int((await self._conn.execute(query)).scalar_one())
