"""Repositories for patients, devices and device-to-patient assignments."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import Cipher, DataKey
from medmesh.domain.errors import Conflict, NotFound
from medmesh.domain.registry import Device, DeviceAssignment, Patient, PostalAddress
from medmesh.store._sql import any_of
from medmesh.store.database import cipher_of
from medmesh.store.device_keys import DeviceSigningKey
from medmesh.store.schema import (
    device_assignments,
    device_signing_keys,
    devices,
    imaging_studies,
    patient_identifiers,
    patients,
)


def _identifier_index(cipher: Cipher, system: str, value: str) -> str:
    return cipher.blind_index("patient-identifier", f"{system}\x1f{value}")


async def _patients(conn: AsyncConnection, rows: Sequence[RowMapping]) -> list[Patient]:
    """Decrypt patient rows (rows of an erased patient, should one remain, are skipped)."""
    keys = await cipher_of(conn).keys_for({r["id"] for r in rows})
    others = await _other_identifiers(conn, keys)
    found = []
    for row in rows:
        key = keys.get(row["id"])
        if key is None:
            continue
        pid = row["id"]
        born = row["birth_date"]
        found.append(
            Patient(
                id=pid,
                identifier_system=row["identifier_system"],
                identifier_value=key.open_text(row["identifier_value"], _IDENTIFIER, pid),
                family=key.open_text(row["family"], _FAMILY, pid),
                given=key.open_text(row["given"], _GIVEN, pid),
                birth_date=(
                    None
                    if born is None
                    else date.fromisoformat(key.open_text(born, _BIRTH_DATE, pid))
                ),
                gender=row["gender"],
                address=_address(key, row["address"], pid),
                phone=None if row["phone"] is None else key.open_text(row["phone"], _PHONE, pid),
                other_identifiers=tuple(sorted(others.get(pid, ()))),
            )
        )
    return found


async def _other_identifiers(
    conn: AsyncConnection, keys: dict[str, DataKey]
) -> dict[str, list[tuple[str, str]]]:
    """The other identifiers (system, value) of these patients (id → key), opened."""
    if not keys:
        return {}
    query = select(patient_identifiers).where(patient_identifiers.c.patient_id.in_(list(keys)))
    found: dict[str, list[tuple[str, str]]] = {}
    for row in (await conn.execute(query)).mappings():
        pid = row["patient_id"]
        value = keys[pid].open_text(row["value"], _OTHER_IDENTIFIER, row["identifier_index"])
        found.setdefault(pid, []).append((row["system"], value))
    return found


def _address(key: DataKey, sealed: bytes | None, pid: str) -> PostalAddress | None:
    if sealed is None:
        return None
    parts = orjson.loads(key.open_text(sealed, _ADDRESS, pid))
    return PostalAddress(
        tuple(parts.get("lines", ())),
        parts.get("city"),
        parts.get("state"),
        parts.get("postal_code"),
        parts.get("country"),
    )


def _sealed_fields(key: DataKey, patient: Patient) -> dict[str, object]:
    """The patient's columns sealed with its key (the identifier's index is not among them)."""
    pid, born, address = patient.id, patient.birth_date, patient.address
    return {
        "identifier_system": patient.identifier_system,
        "identifier_value": key.seal_text(patient.identifier_value, _IDENTIFIER, pid),
        "family": key.seal_text(patient.family, _FAMILY, pid),
        "given": key.seal_text(patient.given, _GIVEN, pid),
        "birth_date": None if born is None else key.seal_text(born.isoformat(), _BIRTH_DATE, pid),
        "gender": patient.gender,
        "address": None
        if address is None
        else key.seal_text(
            orjson.dumps(
                {
                    "lines": list(address.lines),
                    "city": address.city,
                    "state": address.state,
                    "postal_code": address.postal_code,
                    "country": address.country,
                }
            ).decode(),
            _ADDRESS,
            pid,
        ),
        "phone": None if patient.phone is None else key.seal_text(patient.phone, _PHONE, pid),
    }


_IDENTIFIER = "patients.identifier_value"
_OTHER_IDENTIFIER = "patient_identifiers.value"
_FAMILY = "patients.family"
_GIVEN = "patients.given"
_BIRTH_DATE = "patients.birth_date"
_ADDRESS = "patients.address"
_PHONE = "patients.phone"


def _starts_any_part(name: str, patient: Patient) -> bool:
    """FHIR string search: case-insensitive "starts with" on any part of the name."""
    prefix = name.casefold()
    return patient.family.casefold().startswith(prefix) or patient.given.casefold().startswith(
        prefix
    )


def _device(row: RowMapping) -> Device:
    return Device(
        id=row["id"],
        display_name=row["display_name"],
        manufacturer=row["manufacturer"],
        model=row["model"],
        serial_number=row["serial_number"],
        shared_monitor=bool(row["shared_monitor"]),
        type=row["type"],
    )


class Patients:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, patient: Patient) -> None:
        cipher = cipher_of(self._conn)
        existing = await self.find_by_identifier(
            patient.identifier_system, patient.identifier_value
        )
        if existing is not None:
            raise Conflict("a patient with this identifier already exists")
        key = await cipher.key_or_create(patient.id)
        await self._conn.execute(
            patients.insert().values(
                id=patient.id,
                identifier_index=_identifier_index(
                    cipher, patient.identifier_system, patient.identifier_value
                ),
                created_at=datetime.now(UTC),
                **_sealed_fields(key, patient),
            )
        )

    async def update(self, patient: Patient) -> None:
        """Replace a patient's demographics (a hospital's patient feed, HL7 ADT A08)."""
        cipher = cipher_of(self._conn)
        existing = await self.find_by_identifier(
            patient.identifier_system, patient.identifier_value
        )
        if existing is not None and existing.id != patient.id:
            raise Conflict("a patient with this identifier already exists")
        await self.get(patient.id)
        key = await cipher.key_or_create(patient.id)
        await self._conn.execute(
            update(patients)
            .where(patients.c.id == patient.id)
            .values(
                identifier_index=_identifier_index(
                    cipher, patient.identifier_system, patient.identifier_value
                ),
                **_sealed_fields(key, patient),
            )
        )

    async def add_identifiers(
        self, patient_id: str, identifiers: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Give the patient these (system, value) identifiers besides their own, each unless
        they hold it already; Conflict when another patient holds one (nothing is added).
        Returns the ones added."""
        cipher = cipher_of(self._conn)
        fresh: dict[str, tuple[str, str]] = {}
        for system, value in identifiers:
            index = _identifier_index(cipher, system, value)
            holders = {p.id for p in await self._by_identifier(system, value)}
            if holders - {patient_id}:
                raise Conflict("another patient has this identifier")
            if not holders:
                fresh[index] = (system, value)
        if not fresh:
            return []
        key = await cipher.key_or_create(patient_id)
        await self._conn.execute(
            patient_identifiers.insert(),
            [
                {
                    "identifier_index": index,
                    "patient_id": patient_id,
                    "system": system,
                    "value": key.seal_text(value, _OTHER_IDENTIFIER, index),
                }
                for index, (system, value) in fresh.items()
            ],
        )
        return list(fresh.values())

    async def get(self, patient_id: str) -> Patient:
        rows = (
            (await self._conn.execute(select(patients).where(patients.c.id == patient_id)))
            .mappings()
            .all()
        )
        found = await _patients(self._conn, rows)
        if not found:
            raise NotFound("Patient not found")
        return found[0]

    async def get_many(self, patient_ids: Sequence[str]) -> list[Patient]:
        """The patients with these ids that exist, in no particular order."""
        if not patient_ids:
            return []
        query = select(patients).where(patients.c.id.in_(list(dict.fromkeys(patient_ids))))
        return await _patients(self._conn, (await self._conn.execute(query)).mappings().all())

    async def find_by_identifier(self, system: str | None, value: str) -> Patient | None:
        found = await self._by_identifier(system, value)
        return found[0] if found else None

    async def with_imaging_studies(self, limit: int = 500) -> list[Patient]:
        """Patients who have at least one filed imaging study."""
        query = (
            select(patients)
            .where(patients.c.id.in_(select(imaging_studies.c.patient_id)))
            .limit(limit)
        )
        return await _patients(self._conn, (await self._conn.execute(query)).mappings().all())

    async def all_by_identifier(self, system: str | None, value: str) -> list[Patient]:
        """Every patient with this identifier (more than one only without a system)."""
        return await self._by_identifier(system, value)

    async def _by_identifier(self, system: str | None, value: str) -> list[Patient]:
        """Patients with this identifier; without a system, the identifier in any system
        (one blind index per system in use, so few)."""
        cipher = cipher_of(self._conn)
        if system is not None:
            systems = [system]
        else:
            distinct = select(patients.c.identifier_system).union(
                select(patient_identifiers.c.system)
            )
            systems = sorted(set((await self._conn.execute(distinct)).scalars()))
        if not systems:
            return []
        wanted = [_identifier_index(cipher, s, value) for s in systems]
        others = select(patient_identifiers.c.patient_id).where(
            patient_identifiers.c.identifier_index.in_(wanted)
        )
        query = select(patients).where(
            or_(patients.c.identifier_index.in_(wanted), patients.c.id.in_(others))
        )
        return await _patients(self._conn, (await self._conn.execute(query)).mappings().all())

    async def search(
        self,
        *,
        identifier: tuple[str | None, str] | None = None,
        name: str | None = None,
        within: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Patient]:
        """Patients ordered by family name, given name, id.

        Names are ciphertext under each patient's own key, so the database can neither filter
        nor order by them: the candidates are decrypted here and filtered and sorted in Python
        (docs/encryption.md weighs this against blind indexes of name prefixes). `within`:
        only these patients (the ones the caller may see); None: no limit.
        """
        if identifier is not None:
            candidates = await self._by_identifier(*identifier)
        else:
            query = select(patients)
            if within is not None:
                query = query.where(patients.c.id.in_(list(within)))
            rows = (await self._conn.execute(query)).mappings().all()
            candidates = await _patients(self._conn, rows)
        if within is not None:
            allowed = set(within)
            candidates = [p for p in candidates if p.id in allowed]
        if name is not None:
            candidates = [p for p in candidates if _starts_any_part(name, p)]
        candidates.sort(key=lambda p: (p.family, p.given, p.id))
        return candidates[offset : offset + limit]


class Devices:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, device: Device, secret_hash: str) -> None:
        await self._conn.execute(
            devices.insert().values(
                id=device.id,
                display_name=device.display_name,
                manufacturer=device.manufacturer,
                model=device.model,
                serial_number=device.serial_number,
                shared_monitor=device.shared_monitor,
                type=device.type,
                secret_hash=secret_hash,
                created_at=datetime.now(UTC),
            )
        )

    async def set_secret_hash(self, device_id: str, secret_hash: str) -> None:
        """Replace the device's credential (rotation); the old secret stops working at once."""
        result = await self._conn.execute(
            update(devices).where(devices.c.id == device_id).values(secret_hash=secret_hash)
        )
        if not result.rowcount:
            raise NotFound("Device not found")

    async def set_shared_monitor(self, device_id: str, shared: bool) -> None:
        result = await self._conn.execute(
            update(devices).where(devices.c.id == device_id).values(shared_monitor=shared)
        )
        if not result.rowcount:
            raise NotFound("Device not found")

    async def get(self, device_id: str) -> Device:
        row = (
            (await self._conn.execute(select(devices).where(devices.c.id == device_id)))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("Device not found")
        return _device(row)

    async def existing_ids(self, device_ids: Sequence[str]) -> set[str]:
        if not device_ids:
            return set()
        query = select(devices.c.id).where(devices.c.id.in_(device_ids))
        return set((await self._conn.execute(query)).scalars())

    async def find_by_secret_hash(self, secret_hash: str) -> Device | None:
        query = select(devices).where(devices.c.secret_hash == secret_hash)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _device(row)

    async def secret_hashes(self, device_ids: Collection[str]) -> dict[str, str]:
        """Device id → the hash of its current credential, for those of `device_ids` that
        exist."""
        query = select(devices.c.id, devices.c.secret_hash).where(
            devices.c.id.in_(sorted(set(device_ids)))
        )
        return {row.id: row.secret_hash for row in await self._conn.execute(query)}

    async def find_by_serial_number(self, serial: str) -> Device | None:
        """The device with this serial number; None when no device, or more than one, has it
        (serial numbers are unique per manufacturer only, so a shared one identifies nothing)."""
        query = select(devices).where(devices.c.serial_number == serial).limit(2)
        rows = (await self._conn.execute(query)).mappings().all()
        return _device(rows[0]) if len(rows) == 1 else None

    async def search(
        self,
        *,
        patient_id: str | None = None,
        within: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Device]:
        """`within`: only devices ever assigned to these patients; None: no limit."""
        query = select(devices).order_by(devices.c.display_name, devices.c.id)
        if within is not None:
            query = query.where(
                devices.c.id.in_(
                    select(device_assignments.c.device_id).where(
                        device_assignments.c.patient_id.in_(list(within))
                    )
                )
            )
        if patient_id is not None:
            assigned = select(device_assignments.c.device_id).where(
                device_assignments.c.patient_id == patient_id
            )
            query = query.where(devices.c.id.in_(assigned))
        rows = (await self._conn.execute(query.limit(limit).offset(offset))).mappings()
        return [_device(r) for r in rows]


@dataclass(frozen=True, slots=True)
class DevicesAtIngest:
    """What the storing transaction knows of the devices of its batches."""

    histories: dict[str, list[DeviceAssignment]]  # every device asked for; [] if unknown
    credentials: dict[str, str]  # device id -> credential hash, for existing devices
    signing_keys: dict[str, DeviceSigningKey]  # for the devices that have a signing key


# What ingest reads of the devices of every group commit, built once (store/_sql.py says why).
_DEVICES_AT_INGEST = (
    select(
        devices.c.id,
        devices.c.secret_hash,
        device_assignments.c.patient_id,
        device_assignments.c.start,
        device_assignments.c.end,
        device_signing_keys.c.public_key,
        device_signing_keys.c.key_id,
        device_signing_keys.c.required,
    )
    .select_from(
        devices.outerjoin(device_assignments).outerjoin(
            device_signing_keys, device_signing_keys.c.device_id == devices.c.id
        )
    )
    .where(any_of(devices.c.id, "ids"))
    .order_by(devices.c.id, device_assignments.c.start)
)


class Assignments:
    """Which patient a device belonged to, over time. Assignments of one device never overlap."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def assign(self, assignment: DeviceAssignment) -> None:
        """Assign a device from `start`; an open assignment of the device ends at `start`."""
        await Devices(self._conn).get(assignment.device_id)
        await Patients(self._conn).get(assignment.patient_id)
        history = await self.for_device(assignment.device_id)
        for other in history:
            if other.end is None and other.start < assignment.start:
                continue  # the open assignment is closed at the new start, below
            overlaps = (other.end is None or other.end > assignment.start) and (
                assignment.end is None or other.start < assignment.end
            )
            if overlaps:
                raise Conflict("the device is already assigned for part of that period")
        await self._conn.execute(
            update(device_assignments)
            .where(
                and_(
                    device_assignments.c.device_id == assignment.device_id,
                    device_assignments.c.end.is_(None),
                )
            )
            .values(end=assignment.start)
        )
        await self._conn.execute(
            device_assignments.insert().values(
                device_id=assignment.device_id,
                patient_id=assignment.patient_id,
                start=assignment.start,
                end=assignment.end,
            )
        )

    async def end(self, device_id: str, at: datetime) -> None:
        await self._conn.execute(
            update(device_assignments)
            .where(
                and_(
                    device_assignments.c.device_id == device_id,
                    device_assignments.c.end.is_(None),
                )
            )
            .values(end=at)
        )

    async def for_device(self, device_id: str) -> Sequence[DeviceAssignment]:
        return (await self.for_devices([device_id]))[device_id]

    async def for_devices(self, device_ids: Collection[str]) -> dict[str, list[DeviceAssignment]]:
        """Each device's assignment history, oldest first, in one query (an empty list for a
        device never assigned)."""
        if not device_ids:
            return {}
        query = (
            select(device_assignments)
            .where(device_assignments.c.device_id.in_(sorted(set(device_ids))))
            .order_by(device_assignments.c.start)
        )
        found: dict[str, list[DeviceAssignment]] = {device_id: [] for device_id in device_ids}
        for r in (await self._conn.execute(query)).mappings():
            found[r["device_id"]].append(
                DeviceAssignment(r["device_id"], r["patient_id"], r["start"], r["end"])
            )
        return found

    async def for_devices_with_credentials(self, device_ids: Collection[str]) -> DevicesAtIngest:
        """`for_devices`, each existing device's credential hash (`Devices.secret_hashes`) and
        signing key, in one query: what ingest reads for the devices of a group commit."""
        found = DevicesAtIngest({device_id: [] for device_id in device_ids}, {}, {})
        if not device_ids:
            return found
        query = _DEVICES_AT_INGEST
        ids = {"ids": sorted(set(device_ids))}
        for r in (await self._conn.execute(query, ids)).mappings():
            found.credentials[r["id"]] = r["secret_hash"]
            if r["key_id"] is not None:
                found.signing_keys[r["id"]] = DeviceSigningKey(
                    r["id"], bytes(r["public_key"]), r["key_id"], r["required"]
                )
            if r["start"] is not None:
                found.histories[r["id"]].append(
                    DeviceAssignment(r["id"], r["patient_id"], r["start"], r["end"])
                )
        return found
