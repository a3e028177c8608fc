"""Repository for what the platform knows of each device's state: last seen, battery,
firmware, connectivity."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store._sql import upsert
from medmesh.store.schema import device_status


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    last_seen: datetime
    online: bool | None = None
    battery_percent: float | None = None
    firmware: str | None = None
    reported_at: datetime | None = None


class DeviceStatuses:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def seen(self, device_ids: Iterable[str], at: datetime) -> None:
        """Record that each device was heard from at `at`.

        One statement for every device (a group commit or an MQTT micro-batch has many);
        its rows in device-id order, so two workers touching the same devices lock them in
        the same order and cannot deadlock."""
        rows = [{"device_id": d, "last_seen": at} for d in sorted(set(device_ids))]
        if rows:
            await self._conn.execute(
                upsert(self._conn, device_status, ("device_id",), ("last_seen",)), rows
            )

    async def report(
        self,
        device_id: str,
        at: datetime,
        *,
        online: bool | None,
        battery_percent: float | None,
        firmware: str | None,
        live: bool = True,
    ) -> None:
        """Record a status report; fields the report leaves out keep their earlier value.

        `live` is False for a report the broker replays from its retained store (on every
        subscribe): it tells the state, not that the device was just heard from.
        """
        current = await self.get(device_id)
        # A report of going offline is usually the broker publishing the device's last will:
        # it is not a sign of life either, so neither changes last_seen.
        heard = live and online is not False
        last_seen = at if heard or current is None else current.last_seen
        values = {
            "device_id": device_id,
            "last_seen": last_seen,
            "online": online if online is not None else current and current.online,
            "battery_percent": battery_percent
            if battery_percent is not None
            else current and current.battery_percent,
            "firmware": firmware if firmware is not None else current and current.firmware,
            "reported_at": at,
        }
        await self._conn.execute(
            upsert(self._conn, device_status, ("device_id",), tuple(values)[1:]), values
        )

    async def get(self, device_id: str) -> DeviceStatus | None:
        row = (
            (
                await self._conn.execute(
                    select(device_status).where(device_status.c.device_id == device_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return DeviceStatus(
            row["device_id"],
            row["last_seen"],
            row["online"],
            row["battery_percent"],
            row["firmware"],
            row["reported_at"],
        )
