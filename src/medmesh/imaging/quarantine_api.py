"""The imaging quarantine over HTTP, for org admins: instances no single patient matched wait
here with the reason; an admin files one under a patient of their organisation or rejects it
(its file and key are destroyed). Every look and decision is audited.

The list shows the PatientID, issuer and name the file carries, since an admin cannot match
without them; org admins otherwise read no health data (docs/imaging.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import record, require_principal
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Forbidden, NotFound
from medmesh.domain.imaging import QuarantineStatus
from medmesh.http.deps import DatabaseDep, provided
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.dicom_files import read_instance
from medmesh.store.consents import patient_organization
from medmesh.store.imaging import ImagingRecords

router = APIRouter(prefix="/api/v1/imaging", tags=["imaging"], responses=ERROR_RESPONSES)
ArchiveDep = Annotated[ImagingArchive, Depends(provided(ImagingArchive))]


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: str = Field(min_length=1, max_length=64, description="the patient's id")


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=200, description="why it is refused")


async def _admin(request: Request, principal: Principal, subtype: str, item: str | None) -> None:
    allowed = principal.role is Role.ORG_ADMIN and principal.scopes.allows(
        "ImagingStudy", Interaction.UPDATE
    )
    if not allowed:
        await record(
            request,
            principal,
            interaction=Interaction.UPDATE,
            permitted=False,
            patient_id=None,
            resource_type="ImagingStudy",
            subtype=subtype,
            basis="not-organization-admin",
            resource_id=item,
        )
        raise Forbidden("only an organisation admin handles the imaging quarantine")


@router.get("/quarantine", summary="Instances waiting to be matched to a patient")
async def list_quarantine(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    await _admin(request, principal, "quarantine-list", None)
    items = []
    async with database.read() as conn:
        records = ImagingRecords(conn)
        for item in await records.quarantined():
            _, header = read_instance(await records.quarantined_content(item.id))
            items.append(
                {
                    "id": item.id,
                    "reason": item.reason,
                    "source": item.source,
                    "received_at": item.received_at.isoformat(),
                    "modality": item.modality,
                    "study_uid": item.study_uid,
                    "patient_id_in_file": header.patient_id,
                    "issuer_in_file": header.issuer_of_patient_id,
                    "name_in_file": header.patient_name,
                }
            )
    await record(
        request,
        principal,
        interaction=Interaction.SEARCH,
        permitted=True,
        patient_id=None,
        resource_type="ImagingStudy",
        subtype="quarantine-list",
        basis="organization-admin",
    )
    return {"items": items}


@router.post("/quarantine/{item_id}/assign", summary="File a quarantined instance under a patient")
async def assign(
    item_id: str,
    body: Assignment,
    request: Request,
    database: DatabaseDep,
    archive: ArchiveDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _admin(request, principal, "quarantine-assign", item_id)
    async with database.read() as conn:
        organization = await patient_organization(conn, body.patient)
    if organization != principal.organization_id:
        await record(
            request,
            principal,
            interaction=Interaction.UPDATE,
            permitted=False,
            patient_id=body.patient if organization is not None else None,
            resource_type="ImagingStudy",
            subtype="quarantine-assign",
            basis="not-organization-admin",
            resource_id=item_id,
        )
        raise NotFound("no such patient in your organisation")
    receipt = await archive.assign(item_id, body.patient, by=principal.id)
    await record(
        request,
        principal,
        interaction=Interaction.UPDATE,
        permitted=True,
        patient_id=body.patient,
        resource_type="ImagingStudy",
        subtype="quarantine-assign",
        basis="organization-admin",
        resource_id=item_id,
    )
    return {"status": QuarantineStatus.ASSIGNED.value, "study_uid": receipt.header.study_uid}


@router.post("/quarantine/{item_id}/reject", summary="Refuse a quarantined instance (destroyed)")
async def reject(
    item_id: str,
    body: Rejection,
    request: Request,
    archive: ArchiveDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _admin(request, principal, "quarantine-reject", item_id)
    await archive.reject(item_id, by=principal.id)
    await record(
        request,
        principal,
        interaction=Interaction.DELETE,
        permitted=True,
        patient_id=None,
        resource_type="ImagingStudy",
        subtype="quarantine-reject",
        basis="organization-admin",
        resource_id=item_id,
    )
    return {"status": QuarantineStatus.REJECTED.value}
