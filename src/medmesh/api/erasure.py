"""Erasing a patient over HTTP: for their organisation's admins (the patient asks them; the
admin checks identity and legal grounds). Legal hold and retention refuse it with 409."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.erasure import LegalHold, WithinRetention, erase_patient
from medmesh.access.http import record, require_principal
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Conflict, Forbidden
from medmesh.http.deps import DatabaseDep, SettingsDep
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.consents import patient_organization

router = APIRouter(prefix="/api/v1", tags=["access"], responses=ERROR_RESPONSES)


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=3, max_length=500, description="Why, e.g. the patient's request of a date"
    )


@router.post(
    "/patients/{patient_id}/erasure",
    summary="Erase a patient: destroy their data key, delete their rows, issue a certificate",
)
async def erase(
    patient_id: str,
    body: ErasureRequest,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    async with database.read() as conn:
        organization = await patient_organization(conn, patient_id)
    # Refused alike whether or not the patient exists: a refusal tells nothing about records.
    allowed = (
        principal.role is Role.ORG_ADMIN
        and principal.scopes.allows("Patient", Interaction.DELETE)
        and organization == principal.organization_id
    )

    async def audit(permitted: bool, basis: str) -> None:
        await record(
            request,
            principal,
            interaction=Interaction.DELETE,
            permitted=permitted,
            patient_id=patient_id,
            resource_type="Patient",
            resource_id=patient_id,
            subtype="erase",
            basis=basis,
        )

    if not allowed:
        if organization is not None:
            await audit(False, "not-organization-admin")
        raise Forbidden("only an admin of the patient's organisation erases a record")
    days = settings.erasure_retention_days
    try:
        certificate = await erase_patient(
            database,
            patient_id,
            reason=body.reason,
            requested_by=principal.name,
            retention=timedelta(days=days) if days else None,
        )
    except (LegalHold, WithinRetention) as refused:
        await audit(False, "legal-hold" if isinstance(refused, LegalHold) else "retention")
        raise Conflict(str(refused)) from None
    await audit(True, "organization-admin")
    return {"document": certificate.document, "signature": certificate.signature}
