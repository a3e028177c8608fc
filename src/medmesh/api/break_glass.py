"""Emergency access ("break-glass") to a record outside the clinician's care team, and the
care-team membership that normally decides it.

A clinician states a reason and gets time-limited access to one patient's record; the start
and every read under it are audited with purpose ETREAT, and the patient sees them among the
accesses to their record.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import record, require_principal
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.decision import EMERGENCY_PURPOSE
from medmesh.access.policy.scopes import Context, Interaction
from medmesh.domain.errors import Forbidden, NotFound
from medmesh.http.deps import DatabaseDep, database_of, settings_of
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.consents import BreakGlass, CareTeams, patient_organization
from medmesh.store.registry import Patients
from medmesh.store.users import Users

router = APIRouter(prefix="/api/v1", tags=["access"], responses=ERROR_RESPONSES)


class BreakGlassRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$", description="The patient's id")
    reason: str = Field(
        min_length=10,
        max_length=500,
        description="Why the record is needed now; shown to the patient and auditors",
    )


class CareTeamMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["primary", "nurse", "escalation", "member"] = "member"


@router.post("/break-glass", status_code=201, summary="Open a record in an emergency")
async def break_glass(
    body: BreakGlassRequest,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    may = principal.role is Role.CLINICIAN and Context.USER in principal.scopes.contexts(
        "Patient", Interaction.READ
    )
    async with database.read() as conn:
        known = may and bool(await Patients(conn).get_many([body.patient]))
    if not known:
        await record(
            request,
            principal,
            interaction=Interaction.READ,
            permitted=False,
            patient_id=body.patient,
            resource_type="Patient",
            subtype="break-glass",
            basis="break-glass-refused",
            purpose=EMERGENCY_PURPOSE,
        )
        if not may:
            raise Forbidden("break-glass is for clinicians with a user/ scope")
        raise NotFound(f"Patient/{body.patient} is not known")
    now = datetime.now(UTC)
    minutes = settings_of(request).break_glass_minutes
    grant_id = str(uuid.uuid4())
    until = now + timedelta(minutes=minutes)
    async with database.write() as conn:
        await BreakGlass(conn).start(
            grant_id=grant_id,
            user_id=principal.id,
            patient_id=body.patient,
            reason=body.reason,
            at=now,
            until=until,
        )
    await record(
        request,
        principal,
        interaction=Interaction.READ,
        permitted=True,
        patient_id=body.patient,
        resource_type="Patient",
        resource_id=body.patient,
        subtype="break-glass",
        basis=f"break-glass:{grant_id}",
        purpose=EMERGENCY_PURPOSE,
    )
    return {"id": grant_id, "patient": body.patient, "expires_at": until.isoformat()}


@router.get("/patients/{patient_id}/break-glass", summary="Emergency accesses to a record")
async def list_break_glass(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    """For the patient themself and their organisation's admins."""
    async with database.read() as conn:
        organization = await patient_organization(conn, patient_id)
        own = principal.role is Role.PATIENT and principal.patient_id == patient_id
        admin = principal.role is Role.ORG_ADMIN and organization == principal.organization_id
        if organization is None or not (own or admin):
            raise NotFound(f"Patient/{patient_id} is not known")
        rows = await BreakGlass(conn).for_patient(patient_id)
        users = Users(conn)
        names: dict[str, str | None] = {}
        for row in rows:
            user = await users.get(row["user_id"])
            names[row["user_id"]] = user.display_name if user is not None else None
    return {
        "accesses": [
            {
                "id": r["id"],
                "clinician": names[r["user_id"]],
                "reason": r["reason"],
                "started_at": r["started_at"].isoformat(),
                "expires_at": r["expires_at"].isoformat(),
            }
            for r in rows
        ]
    }


async def _admin_of(request: Request, principal: Principal, patient_id: str) -> None:
    """Refused alike whether or not the patient exists."""
    async with database_of(request).read() as conn:
        organization = await patient_organization(conn, patient_id)
    if (
        principal.role is not Role.ORG_ADMIN
        or not principal.scopes.allows("CareTeam", Interaction.UPDATE)
        or organization != principal.organization_id
    ):
        raise Forbidden("care teams are managed by the patient's organisation's admins")


@router.put(
    "/patients/{patient_id}/care-team/{user_id}",
    status_code=204,
    summary="Add a clinician to a patient's care team",
)
async def add_care_team_member(
    patient_id: str,
    user_id: str,
    body: CareTeamMember,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    await _admin_of(request, principal, patient_id)
    async with database.write() as conn:
        user = await Users(conn).get(user_id)
        if user is None or user.role != Role.CLINICIAN.value:
            raise NotFound(f"no clinician {user_id}")
        await CareTeams(conn).add(patient_id, user_id, body.role, principal.name)
    await record(
        request,
        principal,
        interaction=Interaction.UPDATE,
        permitted=True,
        patient_id=patient_id,
        resource_type="CareTeam",
        resource_id=user_id,
        subtype="care-team-add",
        basis="organization-admin",
    )
    return Response(status_code=204)


@router.delete(
    "/patients/{patient_id}/care-team/{user_id}",
    status_code=204,
    summary="Remove a clinician from a patient's care team",
)
async def remove_care_team_member(
    patient_id: str,
    user_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    await _admin_of(request, principal, patient_id)
    async with database.write() as conn:
        if not await CareTeams(conn).remove(patient_id, user_id):
            raise NotFound(f"{user_id} is not in this care team")
    await record(
        request,
        principal,
        interaction=Interaction.UPDATE,
        permitted=True,
        patient_id=patient_id,
        resource_type="CareTeam",
        resource_id=user_id,
        subtype="care-team-remove",
        basis="organization-admin",
    )
    return Response(status_code=204)
