"""Repositories for signed readings: each device's Ed25519 public key (and whether it must sign),
and the nonces seen within the replay window, shared by every process (docs/signed-payloads.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import NotFound
from medmesh.store._sql import insert_ignoring_duplicates, upsert
from medmesh.store.schema import device_signing_keys, devices, signature_nonces

_k = device_signing_keys.c
_n = signature_nonces.c


def key_id_of(public_key: bytes) -> str:
    """A short name of a public key, sent by the device with each signature: the first 16 hex
    digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DeviceSigningKey:
    device_id: str
    public_key: bytes  # raw 32-byte Ed25519 public key
    key_id: str
    required: bool  # this device's readings must be signed


class DeviceSigningKeys:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def set(self, device_id: str, public_key: bytes, now: datetime) -> DeviceSigningKey:
        """Register or replace the device's key (keeping whether it must sign)."""
        found = await self._conn.scalar(select(devices.c.id).where(devices.c.id == device_id))
        if found is None:
            raise NotFound("no such device")
        values = {
            "device_id": device_id,
            "public_key": public_key,
            "key_id": key_id_of(public_key),
            "required": False,
            "set_at": now,
        }
        await self._conn.execute(
            upsert(
                self._conn, device_signing_keys, ("device_id",), ("public_key", "key_id", "set_at")
            ),
            values,
        )
        stored = await self.get(device_id)
        assert stored is not None
        return stored

    async def require(self, device_id: str, required: bool) -> None:
        """Whether the device's readings must be signed; it needs a key first (NotFound)."""
        result = await self._conn.execute(
            update(device_signing_keys).where(_k.device_id == device_id).values(required=required)
        )
        if not result.rowcount:
            raise NotFound("the device has no signing key: set one first")

    async def get(self, device_id: str) -> DeviceSigningKey | None:
        return (await self.for_devices([device_id])).get(device_id)

    async def for_devices(self, device_ids: Iterable[str]) -> dict[str, DeviceSigningKey]:
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        rows = await self._conn.execute(select(device_signing_keys).where(_k.device_id.in_(ids)))
        return {
            r.device_id: DeviceSigningKey(r.device_id, bytes(r.public_key), r.key_id, r.required)
            for r in rows
        }


class SignatureNonces:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def seen(self, pairs: Sequence[tuple[str, str]], now: datetime) -> set[tuple[str, str]]:
        """Those (device, nonce) pairs recorded and not yet expired."""
        if not pairs:
            return set()
        rows = await self._conn.execute(
            select(_n.device_id, _n.nonce).where(
                tuple_(_n.device_id, _n.nonce).in_(list(pairs)), _n.expires_at >= now
            )
        )
        return {(d, n) for d, n in rows}

    async def record(
        self, nonces: Sequence[tuple[str, str, datetime]], now: datetime
    ) -> set[tuple[str, str]]:
        """Record (device, nonce, expires) rows; returns the pairs that were new. Expired rows
        of these devices are deleted first, so a nonce is kept only for its window."""
        if not nonces:
            return set()
        await self._conn.execute(
            delete(signature_nonces).where(
                _n.device_id.in_(sorted({d for d, _, _ in nonces})), _n.expires_at < now
            )
        )
        insert = insert_ignoring_duplicates(self._conn, signature_nonces).returning(
            _n.device_id, _n.nonce
        )
        rows = [{"device_id": d, "nonce": n, "expires_at": e} for d, n, e in nonces]
        return {(d, n) for d, n in (await self._conn.execute(insert, rows)).all()}
