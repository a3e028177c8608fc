"""Signed readings: giving a device its Ed25519 public key (or a new one) and deciding whether
its readings must be signed (docs/signed-payloads.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from medmesh.crypto.public_keys import ed25519_public_key
from medmesh.store.database import Database
from medmesh.store.device_keys import DeviceSigningKey, DeviceSigningKeys


async def set_signing_key(
    database: Database, device_id: str, public_key: bytes, *, required: bool | None = None
) -> DeviceSigningKey:
    """Register or rotate the device's key (PEM or base64; ValueError if neither). A rotated
    key takes effect at once: signatures by the old one are refused from then on. `required`
    None keeps whether the device must sign."""
    raw = ed25519_public_key(public_key)
    async with database.write() as conn:
        keys = DeviceSigningKeys(conn)
        stored = await keys.set(device_id, raw, datetime.now(UTC))
        if required is not None:
            await keys.require(device_id, required)
            stored = await keys.get(device_id) or stored
    return stored


async def require_signatures(database: Database, device_id: str, required: bool) -> None:
    """Whether the device's readings must be signed; the device needs a key first (NotFound)."""
    async with database.write() as conn:
        await DeviceSigningKeys(conn).require(device_id, required)
