"""Patients and their care teams, as an operator creates them (CLI, demo, tests)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from medmesh.access.identity.principals import Role
from medmesh.domain.audit import AuditEntry
from medmesh.domain.errors import Forbidden, InvalidSearch, NotFound
from medmesh.domain.registry import Patient
from medmesh.store.audit_log import AuditLog
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.patient_merges import PatientMerge, PatientMerges
from medmesh.store.registry import Patients
from medmesh.store.users import Users

DEFAULT_IDENTIFIER_SYSTEM = "urn:medmesh:mrn"
CARE_TEAM_ROLES = ("primary", "nurse", "escalation", "member")


async def create_patient(
    database: Database,
    *,
    family: str,
    given: str,
    identifier: str,
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM,
    birth_date: date | None = None,
    gender: str | None = None,
) -> Patient:
    patient = Patient(
        id=str(uuid.uuid4()),
        identifier_system=identifier_system,
        identifier_value=identifier,
        family=family,
        given=given,
        birth_date=birth_date,
        gender=gender,
    )
    async with database.write() as conn:
        await Patients(conn).add(patient)
    return patient


async def add_to_care_team(
    database: Database, patient_id: str, user_id: str, *, role: str = "primary", added_by: str
) -> None:
    async with database.write() as conn:
        await Patients(conn).get(patient_id)
        user = await Users(conn).get(user_id)
        if user is None or user.role != Role.CLINICIAN.value:
            raise NotFound("no clinician with this account")
        if role not in CARE_TEAM_ROLES:
            raise InvalidSearch(f"care-team roles are {', '.join(CARE_TEAM_ROLES)}")
        await CareTeams(conn).add(patient_id, user_id, role, added_by)


async def undo_merge(database: Database, merge_id: str, *, by_username: str) -> PatientMerge:
    """Undo an HL7 A40 merge (`medmesh patient unmerge`): an organisation admin's decision,
    audited for both patients. What the merge moved goes back; nothing else changes."""
    async with database.write() as conn:
        admin = await Users(conn).find_by_username(by_username)
        if admin is None or admin.role != Role.ORG_ADMIN.value:
            raise Forbidden("only an organisation admin may undo a merge")
        record = await PatientMerges(conn).undo(merge_id, at=datetime.now(UTC))
        await AuditLog(conn).append_many(
            [
                AuditEntry(
                    action="U",
                    subtype="unmerge",
                    actor_kind="user",
                    actor_id=admin.id,
                    actor_name=admin.username,
                    organization_id=admin.organization_id,
                    resource_type="Patient",
                    resource_id=patient_id,
                    patient_id=patient_id,
                    basis=f"merge:{merge_id}",
                )
                for patient_id in (record.survivor_id, record.merged_id)
            ]
        )
    return record
