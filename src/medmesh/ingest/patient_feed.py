"""A hospital's patient feed (HL7 ADT) applied to the patient registry: find the patient by
any of the message's identifiers, then update them, or register them when none matches.
Every field is sealed with the patient's key by the repository, like any patient's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.audit import AuditEntry
from medmesh.domain.errors import MedmeshError
from medmesh.domain.registry import Patient
from medmesh.ingest.hl7_adt import DEFAULT_SYSTEM, Demographics
from medmesh.ingest.hl7_oru import PatientIdentifier
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from medmesh.store.patient_merges import PatientMerges
from medmesh.store.registry import Patients
from medmesh.store.schema import patient_merges


class AmbiguousPatient(MedmeshError):
    """The message's identifiers name more than one registered patient (or none, to merge)."""


class SelfMerge(MedmeshError):
    """An A40 whose surviving and merged patient are the same."""


@dataclass(frozen=True, slots=True)
class Applied:
    patient_id: str
    created: bool


async def matching_patients(
    conn: AsyncConnection, identifiers: Sequence[PatientIdentifier], *, follow_merges: bool = True
) -> set[str]:
    """The ids of the patients the PID-3 identifiers name: by value, and by system when an
    assigning authority is given (it must then be the identifier's system). A record merged
    into another (A40) stands for the survivor, unless `follow_merges` is off."""
    patients, merges = Patients(conn), PatientMerges(conn)
    found: set[str] = set()
    for identifier in identifiers:
        for system in identifier.authorities or (None,):
            for patient in await patients.all_by_identifier(system, identifier.value):
                found.add(await merges.survivor_of(patient.id) if follow_merges else patient.id)
    return found


@dataclass(frozen=True, slots=True)
class Merged:
    merge_id: str
    already: bool  # the same A40 again: nothing more moved


async def merge_patients(
    database: Database,
    survivor: Sequence[PatientIdentifier],
    merged: Sequence[PatientIdentifier],
    *,
    sender: str,
    at: datetime,
) -> Merged:
    """Merge the patient MRG-1 names into the one PID-3 names, audited in the same
    transaction. Raises AmbiguousPatient or Conflict (nothing changes then)."""
    async with database.write() as conn:
        survivors = await matching_patients(conn, survivor)
        gone = await matching_patients(conn, merged, follow_merges=False)
        if survivors & gone or set(survivor) & set(merged):
            raise SelfMerge("a patient cannot be merged into itself (PID-3 and MRG-1 name one)")
        if len(survivors) != 1:
            raise AmbiguousPatient("PID-3 names no single patient to merge into")
        if len(gone) != 1:
            raise AmbiguousPatient("MRG-1 names no single patient to merge")
        (survivor_id,), (merged_id,) = survivors, gone
        merges = PatientMerges(conn)
        if await merges.survivor_of(merged_id) == survivor_id:
            return Merged(await _merge_id(conn, survivor_id, merged_id), already=True)
        record = await merges.merge(survivor_id, merged_id, at=at, by=sender)
        await AuditLog(conn).append_many(
            [
                AuditEntry(
                    action="U",
                    subtype="merge",
                    actor_kind="hl7",
                    actor_id=sender or "hl7",
                    actor_name=sender or "hl7",
                    resource_type="Patient",
                    resource_id=patient_id,
                    patient_id=patient_id,
                    basis=f"merge:{record.id}",
                )
                for patient_id in (survivor_id, merged_id)
            ]
        )
        return Merged(record.id, already=False)


async def _merge_id(conn: AsyncConnection, survivor_id: str, merged_id: str) -> str:
    query = (
        select(patient_merges.c.id)
        .where(
            patient_merges.c.survivor_id == survivor_id,
            patient_merges.c.merged_id == merged_id,
            patient_merges.c.undone_at.is_(None),
        )
        .order_by(patient_merges.c.merged_at.desc())
    )
    return str((await conn.execute(query)).scalars().first() or "")


async def apply_demographics(database: Database, demographics: Demographics) -> Applied:
    """Create or update the patient an ADT message describes, in one transaction."""
    async with database.write() as conn:
        patients = Patients(conn)
        found = await matching_patients(conn, demographics.identifiers)
        if len(found) > 1:
            raise AmbiguousPatient("the PID-3 identifiers match more than one patient")
        if found:
            current = await patients.get(found.pop())
            await patients.update(_patient(current.id, demographics, current))
            applied = Applied(current.id, created=False)
        else:
            patient = _patient(str(uuid.uuid4()), demographics, None)
            await patients.add(patient)
            applied = Applied(patient.id, created=True)
        # Every PID-3 identifier no record holds yet becomes one of the patient's: a later
        # message naming them by any of them finds them.
        new = [
            (system, identifier.value)
            for identifier in demographics.identifiers
            for system in (identifier.authorities[:1] or (DEFAULT_SYSTEM,))
            if not await patients.all_by_identifier(system, identifier.value)
        ]
        await patients.add_identifiers(applied.patient_id, new)
        return applied


def _patient(patient_id: str, d: Demographics, current: Patient | None) -> Patient:
    # A known patient keeps the identifier they are registered under; the feed's other
    # identifiers found them.
    system = current.identifier_system if current is not None else d.system
    value = current.identifier_value if current is not None else d.value
    return Patient(
        id=patient_id,
        identifier_system=system,
        identifier_value=value,
        family=d.family,
        given=d.given,
        birth_date=d.birth_date,
        gender=d.gender,
        address=d.address,
        phone=d.phone,
    )
