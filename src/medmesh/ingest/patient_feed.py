"""A hospital's patient feed (HL7 ADT) applied to the patient registry: find the patient by
any of the message's identifiers, then update them, or register them when none matches.
Every field is sealed with the patient's key by the repository, like any patient's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from medmesh.domain.errors import MedmeshError
from medmesh.domain.registry import Patient
from medmesh.ingest.hl7_adt import Demographics
from medmesh.ingest.hl7_oru import PatientIdentifier
from medmesh.store.database import Database
from medmesh.store.registry import Patients


class AmbiguousPatient(MedmeshError):
    """The message's identifiers name more than one registered patient."""


@dataclass(frozen=True, slots=True)
class Applied:
    patient_id: str
    created: bool


async def matching_patients(
    patients: Patients, identifiers: Sequence[PatientIdentifier]
) -> set[str]:
    """The ids of the patients the PID-3 identifiers name: by value, and by system when an
    assigning authority is given (it must then be the identifier's system)."""
    found: set[str] = set()
    for identifier in identifiers:
        for patient in await patients.search(identifier=(None, identifier.value), limit=10):
            if not identifier.authorities or patient.identifier_system in identifier.authorities:
                found.add(patient.id)
    return found


async def apply_demographics(database: Database, demographics: Demographics) -> Applied:
    """Create or update the patient an ADT message describes, in one transaction."""
    async with database.write() as conn:
        patients = Patients(conn)
        found = await matching_patients(patients, demographics.identifiers)
        if len(found) > 1:
            raise AmbiguousPatient("the PID-3 identifiers match more than one patient")
        if found:
            current = await patients.get(found.pop())
            await patients.update(_patient(current.id, demographics, current))
            return Applied(current.id, created=False)
        patient = _patient(str(uuid.uuid4()), demographics, None)
        await patients.add(patient)
        return Applied(patient.id, created=True)


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
