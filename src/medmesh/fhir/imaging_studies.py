"""Imaging studies as FHIR ImagingStudy resources (read and search under /fhir/ImagingStudy).

Each carries its series (modality, body site, instances) and a contained DICOMweb Endpoint
(`/dicomweb` of this server) where the pixels are read: the record holds the study as a
reference, never the pixels. Writing is by C-STORE or STOW-RS (docs/imaging.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import audit_results, authorize, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.domain.imaging import Study
from medmesh.fhir import search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.resources import instant
from medmesh.fhir.search import (
    parse_date_param,
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
from medmesh.store.imaging import ImagingRecords, StartedBetween

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENDPOINT_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
DICOMWEB_PATH = "/dicomweb"


def dicomweb_base(request: Request) -> str:
    """The DICOMweb base as the client reached this server."""
    return str(request.base_url).rstrip("/") + DICOMWEB_PATH


def imaging_study(study: Study, dicomweb: str = DICOMWEB_PATH) -> dict[str, Any]:
    series = []
    for item in study.series:
        entry: dict[str, Any] = {
            "uid": item.uid,
            "modality": {"system": DCM, "code": item.modality},
            "numberOfInstances": item.instances,
        }
        if item.number is not None:
            entry["number"] = item.number
        if item.description:
            entry["description"] = item.description
        if item.body_part:
            entry["bodySite"] = {"display": item.body_part}
        series.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study.id,
        "contained": [
            {
                "resourceType": "Endpoint",
                "id": "dicomweb",
                "status": "active",
                "connectionType": {"system": ENDPOINT_TYPE, "code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}],
                "address": dicomweb,
            }
        ],
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.uid}"}],
        "status": "available",
        "modality": [{"system": DCM, "code": m} for m in study.modalities],
        "subject": {"reference": f"Patient/{study.patient_id}"},
        "endpoint": [{"reference": "#dicomweb"}],
        "numberOfSeries": len(study.series),
        "numberOfInstances": study.instances,
        "series": series,
    }
    if study.started is not None:
        resource["started"] = instant(study.started)
    if study.description:
        resource["description"] = study.description
    return resource


def _started(values: list[str]) -> list[StartedBetween]:
    bounds = []
    for value in values:
        try:
            parsed = parse_date_param(value)
        except InvalidSearch as error:
            raise InvalidSearch(str(error).replace("date", "started", 1)) from None
        bounds += [StartedBetween("ge" if b.op == "ge" else "lt", b.at) for b in parsed]
    return bounds


def _modality(value: str | None) -> str | None:
    if not value:
        return None
    system, bar, code = value.rpartition("|")
    if bar and system != DCM:
        raise InvalidSearch(f"modality system must be {DCM}")
    if not code or len(code) > 16:
        raise InvalidSearch("modality must be a DICOM modality code such as MR or CT")
    return code


@router.get(
    "/ImagingStudy/{study_id}",
    summary="Read an ImagingStudy (a DICOM study filed in the record)",
    responses=fhir_ok("ImagingStudy"),
)
async def read_imaging_study(
    study_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        study = await ImagingRecords(conn).study(study_id)
    if study is None:
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    decision = await authorize(
        request,
        principal,
        patient_id=study.patient_id,
        resource_type="ImagingStudy",
        interaction=Interaction.READ,
        subtype="read",
        resource_id=study_id,
        hide=True,
    )
    if decision.categories is not None:  # a consent for some categories covers no imaging
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    return FhirResponse(imaging_study(study, dicomweb_base(request)))


@router.get(
    "/ImagingStudy",
    summary="Search ImagingStudies by patient, started and modality",
    responses=fhir_search("ImagingStudy"),
)
async def search_imaging_studies(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.IMAGING_STUDY))
    paging = parse_paging(params)
    patient_id = searched_patient(params)
    started = _started(params.get("started", []))
    modality = _modality(single(params, "modality"))
    decisions = await search_scope(request, principal, patient_id, resource_type="ImagingStudy")
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await ImagingRecords(conn).search(
            within=within,
            started=started,
            modality=modality,
            limit=paging.count + 1,
            offset=paging.offset,
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [s.patient_id for s in shown],
            resource_type="ImagingStudy",
        )
    base = dicomweb_base(request)
    page = [imaging_study(s, base) for s in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))
