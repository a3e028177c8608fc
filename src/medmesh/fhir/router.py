"""FHIR R4 read and search endpoints under /fhir. Every health-data route depends on
`require_reader`, the one access check."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import require_reader
from medmesh.access.principals import ApiPrincipal
from medmesh.fhir import resources
from medmesh.fhir.bundle import base_url, searchset
from medmesh.fhir.capability import capability_statement
from medmesh.fhir.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.fhir.responses import FhirResponse
from medmesh.fhir.search import (
    observation_query,
    parse_paging,
    parse_reference,
    reject_unknown,
    single,
)
from medmesh.store.database import Database
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observations import Observations
from medmesh.store.registry import Assignments, Devices, Patients

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)
_STARTED = datetime.now(UTC).isoformat()


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _db(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


@router.get(
    "/metadata",
    name="fhir_metadata",
    summary="CapabilityStatement",
    responses=fhir_ok("CapabilityStatement"),
)
async def metadata(request: Request) -> FhirResponse:
    return FhirResponse(capability_statement(base_url(request), _STARTED))


@router.get("/Patient/{patient_id}", summary="Read a Patient", responses=fhir_ok("Patient"))
async def read_patient(
    patient_id: str, request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    async with _db(request).read() as conn:
        record = await Patients(conn).get(patient_id)
    return FhirResponse(resources.patient(record))


@router.get(
    "/Patient",
    summary="Search Patients by identifier or name",
    responses=fhir_search("Patient"),
)
async def search_patients(
    request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    params = _params(request)
    reject_unknown(params, {"identifier", "name"})
    paging = parse_paging(params)
    identifier = single(params, "identifier")
    token: tuple[str | None, str] | None = None
    if identifier is not None:
        system, sep, value = identifier.rpartition("|")
        # `|value` means "with no system"; every medmesh identifier has one, so it matches
        # nothing (the empty system never equals a stored one).
        token = (system if sep else None, value)
    async with _db(request).read() as conn:
        found = await Patients(conn).search(
            identifier=token,
            name=single(params, "name"),
            limit=paging.count + 1,
            offset=paging.offset,
        )
    page = [resources.patient(p) for p in found[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


async def _device_resource(request: Request, device_id: str) -> dict[str, Any]:
    async with _db(request).read() as conn:
        record = await Devices(conn).get(device_id)
        history = await Assignments(conn).for_device(device_id)
        status = await DeviceStatuses(conn).get(device_id)
    now = datetime.now(UTC)
    current = next((a.patient_id for a in history if a.covers(now)), None)
    return resources.device(record, current, status)


@router.get("/Device/{device_id}", summary="Read a Device", responses=fhir_ok("Device"))
async def read_device(
    device_id: str, request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    return FhirResponse(await _device_resource(request, device_id))


@router.get("/Device", summary="Search Devices, by patient", responses=fhir_search("Device"))
async def search_devices(
    request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    params = _params(request)
    reject_unknown(params, {"patient"})
    paging = parse_paging(params)
    patient = single(params, "patient")
    async with _db(request).read() as conn:
        found = await Devices(conn).search(
            patient_id=parse_reference(patient, "Patient") if patient else None,
            limit=paging.count + 1,
            offset=paging.offset,
        )
    page = [await _device_resource(request, d.id) for d in found[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


@router.get(
    "/Observation/{observation_id}",
    summary="Read an Observation",
    responses=fhir_ok("Observation"),
)
async def read_observation(
    observation_id: str, request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    async with _db(request).read() as conn:
        record = await Observations(conn).get(observation_id)
    return FhirResponse(resources.observation(record))


@router.get("/Observation", summary="Search Observations", responses=fhir_search("Observation"))
async def search_observations(
    request: Request, _: ApiPrincipal = Depends(require_reader)
) -> FhirResponse:
    params = _params(request)
    query = observation_query(params)
    paging = parse_paging(params)
    async with _db(request).read() as conn:
        found = await Observations(conn).search(
            # One row more than the page tells whether a next page exists.
            dataclasses.replace(query, limit=query.limit + 1)
        )
    page = [resources.observation(o) for o in found[: query.limit]]
    return FhirResponse(searchset(request, page, paging, len(found) > query.limit))
