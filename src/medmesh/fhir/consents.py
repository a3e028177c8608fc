"""FHIR Consent: a patient's permission to share their record beyond the care team.

Create (POST), read, search by patient, and revoke (DELETE: the consent is kept, status
`inactive`). The patient manages their own consents; an organisation admin may record one on
the patient's behalf (a signed paper form). Which elements mean what is in docs/access.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medmesh.access.http import record, require_principal
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import ALERTS_CATEGORY, consent_manager_basis
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.consent import CATEGORIES, PURPOSES, Consent, ConsentStatus, GranteeType
from medmesh.domain.errors import Forbidden, InvalidSearch, NotFound
from medmesh.domain.timestamps import parse_rfc3339
from medmesh.fhir import search_params
from medmesh.fhir.bundle import base_url, searchset
from medmesh.fhir.search import parse_paging, parse_reference, query_params, reject_unknown, single
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.consents import Consents
from medmesh.store.registry import Patients
from medmesh.store.users import Organizations, Users

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
MEDMESH_CATEGORY_SYSTEM = "https://medmesh.dev/fhir/CodeSystem/data-category"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_SCOPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy",
        }
    ]
}
_CATEGORY = {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}
_POLICY_RULE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
}


class _Reference(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reference: str


class _Coding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    system: str | None = None
    code: str


class _Concept(BaseModel):
    model_config = ConfigDict(extra="ignore")
    coding: list[_Coding] = Field(min_length=1)


class _Period(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str | None = None
    end: str | None = None


class _Actor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reference: _Reference


class _Provision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["permit"] = "permit"
    period: _Period | None = None
    actor: list[_Actor] = Field(min_length=1, max_length=1)
    purpose: list[_Coding] = []
    code: list[_Concept] = []

    @field_validator("purpose")
    @classmethod
    def _purposes(cls, value: list[_Coding]) -> list[_Coding]:
        for coding in value:
            if coding.code not in PURPOSES:
                raise ValueError(f"purpose codes are v3 ActReason codes: {sorted(PURPOSES)}")
        return value

    @field_validator("code")
    @classmethod
    def _categories(cls, value: list[_Concept]) -> list[_Concept]:
        for concept in value:
            for coding in concept.coding:
                if coding.code not in CATEGORIES:
                    raise ValueError(f"data categories are {sorted(CATEGORIES)}")
        return value


class ConsentIn(BaseModel):
    """The part of a FHIR R4 Consent medmesh acts on; unknown top-level elements are refused
    (a modifier we ignored could turn a denial into a permit)."""

    model_config = ConfigDict(extra="forbid")

    resourceType: Literal["Consent"]
    id: str | None = None
    meta: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    status: Literal["active"]
    scope: dict[str, Any] | None = None
    category: list[dict[str, Any]] | None = None
    patient: _Reference
    dateTime: str | None = None
    policyRule: dict[str, Any] | None = None
    provision: _Provision


def _instant(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise InvalidSearch(f"{field} must be an RFC 3339 time with a time zone") from None


def consent_resource(consent: Consent) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "reference": {"reference": f"{consent.grantee_type.value}/{consent.grantee_id}"},
            }
        ],
    }
    if consent.period_start or consent.period_end:
        period: dict[str, str] = {}
        if consent.period_start:
            period["start"] = consent.period_start.isoformat()
        if consent.period_end:
            period["end"] = consent.period_end.isoformat()
        provision["period"] = period
    if consent.purposes:
        provision["purpose"] = [
            {"system": PURPOSE_SYSTEM, "code": p} for p in sorted(consent.purposes)
        ]
    if consent.categories:
        provision["code"] = [
            {
                "coding": [
                    {
                        "system": MEDMESH_CATEGORY_SYSTEM
                        if c == ALERTS_CATEGORY
                        else CATEGORY_SYSTEM,
                        "code": c,
                    }
                ]
            }
            for c in sorted(consent.categories)
        ]
    return {
        "resourceType": "Consent",
        "id": consent.id,
        "status": consent.status.value,
        "scope": _SCOPE,
        "category": [_CATEGORY],
        "patient": {"reference": f"Patient/{consent.patient_id}"},
        "dateTime": consent.created_at.isoformat(),
        "policyRule": _POLICY_RULE,
        "provision": provision,
    }


async def _check_grantee(request: Request, grantee_type: GranteeType, grantee_id: str) -> None:
    async with database_of(request).read() as conn:
        if grantee_type is GranteeType.PRACTITIONER:
            user = await Users(conn).get(grantee_id)
            known = user is not None and user.role == "clinician"
        else:
            known = await Organizations(conn).name(grantee_id) is not None
    if not known:
        raise InvalidSearch(f"provision.actor names no known {grantee_type.value}")


async def _managed(
    request: Request, principal: Principal, patient_id: str, interaction: Interaction
) -> str:
    """Why the principal may manage this patient's consents; refused (and audited) if not."""
    async with database_of(request).read() as conn:
        basis = await consent_manager_basis(conn, principal, patient_id, interaction)
    if basis is None:
        await _record(request, principal, patient_id, None, interaction, None)
        raise Forbidden("only the patient (or their organisation's admin) manages consents")
    return basis


async def _record(
    request: Request,
    principal: Principal,
    patient_id: str,
    consent_id: str | None,
    interaction: Interaction,
    basis: str | None,
) -> None:
    subtype = {
        Interaction.CREATE: "create",
        Interaction.READ: "read",
        Interaction.SEARCH: "search",
        Interaction.DELETE: "revoke",
    }[interaction]
    await record(
        request,
        principal,
        interaction=interaction,
        permitted=basis is not None,
        patient_id=patient_id,
        resource_type="Consent",
        resource_id=consent_id,
        subtype=subtype,
        basis=basis or "not-consent-manager",
    )


@router.post(
    "/Consent",
    status_code=201,
    summary="Record a patient's consent to share",
    responses=fhir_ok("Consent", 201),
)
async def create_consent(
    body: ConsentIn,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    patient_id = parse_reference(body.patient.reference, "Patient")
    basis = await _managed(request, principal, patient_id, Interaction.CREATE)
    kind, _, grantee_id = body.provision.actor[0].reference.reference.partition("/")
    if kind not in ("Practitioner", "Organization") or not grantee_id:
        raise InvalidSearch(
            "provision.actor.reference must be Practitioner/<user id> or Organization/<id>"
        )
    grantee_type = GranteeType(kind)
    await _check_grantee(request, grantee_type, grantee_id)
    period = body.provision.period or _Period()
    start = _instant(period.start, "provision.period.start")
    end = _instant(period.end, "provision.period.end")
    if start is not None and end is not None and end <= start:
        raise InvalidSearch("provision.period.end must be after its start")
    consent = Consent(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        status=ConsentStatus.ACTIVE,
        grantee_type=grantee_type,
        grantee_id=grantee_id,
        categories=frozenset(c.code for concept in body.provision.code for c in concept.coding),
        purposes=frozenset(c.code for c in body.provision.purpose),
        period_start=start,
        period_end=end,
        created_at=datetime.now(UTC),
        created_by=principal.id,
    )
    async with database.write() as conn:
        await Patients(conn).get(patient_id)
        await Consents(conn).add(consent)
    await _record(request, principal, patient_id, consent.id, Interaction.CREATE, basis)
    headers = {"Location": f"{base_url(request)}/Consent/{consent.id}"}
    return FhirResponse(consent_resource(consent), status_code=201, headers=headers)


async def _consent(
    request: Request, principal: Principal, consent_id: str, interaction: Interaction
) -> tuple[Consent, str]:
    """The consent and why the principal may manage it; not found when they may not."""
    async with database_of(request).read() as conn:
        consent = await Consents(conn).get(consent_id)
        basis = (
            None
            if consent is None
            else await consent_manager_basis(conn, principal, consent.patient_id, interaction)
        )
    if consent is None or basis is None:
        if consent is not None:
            await _record(request, principal, consent.patient_id, consent_id, interaction, None)
        raise NotFound(f"Consent/{consent_id} is not known")
    return consent, basis


@router.get("/Consent/{consent_id}", summary="Read a Consent", responses=fhir_ok("Consent"))
async def read_consent(
    consent_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    consent, basis = await _consent(request, principal, consent_id, Interaction.READ)
    await _record(request, principal, consent.patient_id, consent_id, Interaction.READ, basis)
    return FhirResponse(consent_resource(consent))


@router.get("/Consent", summary="Search a patient's Consents", responses=fhir_search("Consent"))
async def search_consents(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.CONSENT))
    paging = parse_paging(params)
    reference = single(params, "patient") or principal.patient_id
    if reference is None:
        raise InvalidSearch("patient is required")
    patient_id = parse_reference(reference, "Patient")
    status = single(params, "status")
    if status is not None and status not in ("active", "inactive"):
        raise InvalidSearch("status must be active or inactive")
    basis = await _managed(request, principal, patient_id, Interaction.SEARCH)
    async with database.read() as conn:
        found = await Consents(conn).for_patient(patient_id)
    found = [c for c in found if status is None or c.status.value == status]
    window = found[paging.offset : paging.offset + paging.count + 1]
    await _record(request, principal, patient_id, None, Interaction.SEARCH, basis)
    page = [consent_resource(c) for c in window[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(window) > paging.count))


@router.delete("/Consent/{consent_id}", summary="Revoke a Consent", responses=fhir_ok("Consent"))
async def revoke_consent(
    consent_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    """The consent stays on record with status `inactive`; it stops granting access at once."""
    consent, basis = await _consent(request, principal, consent_id, Interaction.DELETE)
    async with database.write() as conn:
        await Consents(conn).revoke(consent_id, datetime.now(UTC))
        revoked = await Consents(conn).get(consent_id)
    assert revoked is not None
    await _record(request, principal, consent.patient_id, consent_id, Interaction.DELETE, basis)
    return FhirResponse(consent_resource(revoked))
