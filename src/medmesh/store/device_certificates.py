"""Repository of the client certificates the device CA issued, and their revocation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.schema import device_certificates


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    serial: str
    device_id: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None


def _record(row: RowMapping) -> DeviceCertificate:
    return DeviceCertificate(
        row["serial"],
        row["device_id"],
        row["not_before"],
        row["not_after"],
        row["issued_at"],
        row["revoked_at"],
    )


class DeviceCertificates:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, certificate: DeviceCertificate) -> None:
        await self._conn.execute(
            device_certificates.insert().values(
                serial=certificate.serial,
                device_id=certificate.device_id,
                not_before=certificate.not_before,
                not_after=certificate.not_after,
                issued_at=certificate.issued_at,
                revoked_at=certificate.revoked_at,
            )
        )

    async def get(self, serial: str) -> DeviceCertificate | None:
        row = (
            (
                await self._conn.execute(
                    select(device_certificates).where(device_certificates.c.serial == serial)
                )
            )
            .mappings()
            .first()
        )
        return _record(row) if row is not None else None

    async def of_device(self, device_id: str) -> list[DeviceCertificate]:
        rows = await self._conn.execute(
            select(device_certificates)
            .where(device_certificates.c.device_id == device_id)
            .order_by(device_certificates.c.issued_at, device_certificates.c.serial)
        )
        return [_record(r) for r in rows.mappings()]

    async def revoke(self, serials: list[str], at: datetime) -> list[str]:
        """Mark these certificates revoked at `at` (ones revoked already keep their time);
        returns the serials newly revoked."""
        pending = [
            c.serial
            for serial in serials
            if (c := await self.get(serial)) is not None and c.revoked_at is None
        ]
        if pending:
            await self._conn.execute(
                update(device_certificates)
                .where(device_certificates.c.serial.in_(pending))
                .values(revoked_at=at)
            )
        return pending

    async def revoked(self, *, still_valid_at: datetime | None = None) -> list[DeviceCertificate]:
        """Revoked certificates (for the CRL), leaving out, when given, those expired by
        then: an expired certificate is refused anyway."""
        query = select(device_certificates).where(device_certificates.c.revoked_at.is_not(None))
        if still_valid_at is not None:
            query = query.where(device_certificates.c.not_after >= still_valid_at)
        rows = await self._conn.execute(query.order_by(device_certificates.c.serial))
        return [_record(r) for r in rows.mappings()]
