"""Devices: registration with a secret shown once, assignment to patients, shared bedside
monitors."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from medmesh.access.identity.credentials import (
    DEVICE_SECRET_PREFIX,
    hash_secret,
    new_secret,
)
from medmesh.domain.registry import Device, DeviceAssignment, device_type_token
from medmesh.store.database import Database
from medmesh.store.registry import Assignments, Devices


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    device_id: str
    secret: str  # shown once; only its hash is stored


async def register_device(
    database: Database,
    *,
    display_name: str,
    manufacturer: str | None = None,
    model: str | None = None,
    serial_number: str | None = None,
    shared_monitor: bool = False,
    device_type: str | None = None,
) -> DeviceCredential:
    """Register a device; `device_type` is `system|code` or a SNOMED CT code (ValueError)."""
    device = Device(
        str(uuid.uuid4()),
        display_name,
        manufacturer,
        model,
        serial_number,
        shared_monitor,
        device_type_token(device_type) if device_type else None,
    )
    secret = new_secret(DEVICE_SECRET_PREFIX)
    async with database.write() as conn:
        await Devices(conn).add(device, hash_secret(secret))
    return DeviceCredential(device.id, secret)


async def set_shared_monitor(database: Database, device_id: str, shared: bool) -> None:
    async with database.write() as conn:
        await Devices(conn).set_shared_monitor(device_id, shared)


async def rotate_device_secret(database: Database, device_id: str) -> DeviceCredential:
    secret = new_secret(DEVICE_SECRET_PREFIX)
    async with database.write() as conn:
        await Devices(conn).set_secret_hash(device_id, hash_secret(secret))
    return DeviceCredential(device_id, secret)


async def assign_device(
    database: Database, device_id: str, patient_id: str, start: datetime | None = None
) -> DeviceAssignment:
    assignment = DeviceAssignment(device_id, patient_id, start or datetime.now(UTC))
    async with database.write() as conn:
        await Assignments(conn).assign(assignment)
    return assignment
