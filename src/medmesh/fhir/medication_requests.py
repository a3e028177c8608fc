"""A patient's medications as FHIR MedicationRequest (read and search under
/fhir/MedicationRequest). The care team keeps them through the medications API (care/); an
approved refill is a new MedicationRequest whose `priorPrescription` is the one it renews."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.domain.errors import InvalidSearch
from medmesh.domain.medications import Medication, MedicationStatus
from medmesh.fhir import search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.care_reads import Loaded, read_care_resource
from medmesh.fhir.resources import instant
from medmesh.fhir.search import (
    parse_paging,
    query_params,
    reject_unknown,
    searched_patient,
    single,
)
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.medications import Medications

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def medication_request(medication: Medication) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": medication.name}
    if medication.rxnorm is not None:
        concept["coding"] = [
            {"system": RXNORM, "code": medication.rxnorm, "display": medication.name}
        ]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": medication.id,
        "status": medication.status.value,
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{medication.patient_id}"},
        "authoredOn": instant(medication.authored_at),
        "requester": {
            "reference": f"Practitioner/{medication.requester_id}",
            "display": medication.requester_name,
        },
        "dosageInstruction": [{"text": medication.dosage}],
        "dispenseRequest": {"numberOfRepeatsAllowed": medication.refills},
    }
    if medication.prior_id is not None:
        resource["priorPrescription"] = {"reference": f"MedicationRequest/{medication.prior_id}"}
    return resource


@router.get(
    "/MedicationRequest/{request_id}",
    summary="Read a MedicationRequest",
    responses=fhir_ok("MedicationRequest"),
)
async def read_medication_request(
    request_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    return FhirResponse(
        await read_care_resource(
            request, principal, "MedicationRequest", request_id, _load_medication_request
        )
    )


async def _load_medication_request(conn: AsyncConnection, request_id: str) -> Loaded:
    medication = await Medications(conn).get(request_id)
    return None if medication is None else (medication.patient_id, medication_request(medication))


@router.get(
    "/MedicationRequest",
    summary="Search MedicationRequests by patient and status",
    responses=fhir_search("MedicationRequest"),
)
async def search_medication_requests(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.MEDICATION_REQUEST))
    paging = parse_paging(params)
    patient_id = searched_patient(params)
    statuses = []
    for value in (single(params, "status") or "").split(","):
        if value:
            try:
                statuses.append(MedicationStatus(value))
            except ValueError:
                raise InvalidSearch("status must be active, stopped or completed") from None
    decisions = await search_scope(
        request, principal, patient_id, resource_type="MedicationRequest"
    )
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await Medications(conn).search(
            within=within, statuses=statuses, limit=paging.count + 1, offset=paging.offset
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [m.patient_id for m in shown],
            resource_type="MedicationRequest",
        )
    page = [medication_request(m) for m in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))
