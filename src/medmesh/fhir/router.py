"""FHIR R4 read and search endpoints under /fhir. Every health-data route gets its caller from
`require_principal` and asks `authorize` / `authorized_patients` (access.http), which apply the
policy and audit the access."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import (
    audit_results,
    authorize,
    authorized_patients,
    require_principal,
)
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.oauth.smart_discovery import token_endpoint
from medmesh.access.policy.decision import Decision, Refusal, category_of_code, observation_access
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import NotFound
from medmesh.fhir import resources, search_params
from medmesh.fhir.bundle import base_url, searchset
from medmesh.fhir.capability import capability_statement
from medmesh.fhir.search import (
    observation_query,
    parse_paging,
    parse_reference,
    query_params,
    reject_unknown,
    single,
)
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep, SettingsDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observations import Observations
from medmesh.store.registry import Assignments, Devices, Patients

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)
_STARTED = datetime.now(UTC).isoformat()


@router.get(
    "/metadata",
    name="fhir_metadata",
    summary="CapabilityStatement",
    responses=fhir_ok("CapabilityStatement"),
)
async def metadata(request: Request, settings: SettingsDep) -> FhirResponse:
    token_url = token_endpoint(settings.public_base_url)
    return FhirResponse(capability_statement(base_url(request), _STARTED, token_url))


@router.get("/Patient/{patient_id}", summary="Read a Patient", responses=fhir_ok("Patient"))
async def read_patient(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type="Patient",
        interaction=Interaction.READ,
        subtype="read",
        resource_id=patient_id,
        hide=True,
    )
    async with database.read() as conn:
        record = await Patients(conn).get(patient_id)
    return FhirResponse(resources.patient(record))


@router.get(
    "/Patient",
    summary="Search Patients by identifier or name",
    responses=fhir_search("Patient"),
)
async def search_patients(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.PATIENT))
    paging = parse_paging(params)
    identifier = single(params, "identifier")
    token: tuple[str | None, str] | None = None
    if identifier is not None:
        system, sep, value = identifier.rpartition("|")
        # `|value` means "with no system"; every medmesh identifier has one, so it matches
        # nothing (the empty system never equals a stored one).
        token = (system if sep else None, value)
    decisions = await authorized_patients(
        request, principal, resource_type="Patient", interaction=Interaction.SEARCH
    )
    async with database.read() as conn:
        found = await Patients(conn).search(
            identifier=token,
            name=single(params, "name"),
            within=decisions.keys(),
            limit=paging.count + 1,
            offset=paging.offset,
        )
    shown = found[: paging.count]
    await audit_results(
        request, principal, decisions, [p.id for p in shown], resource_type="Patient"
    )
    page = [resources.patient(p) for p in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


async def _device_resource(request: Request, device_id: str) -> dict[str, Any]:
    async with database_of(request).read() as conn:
        record = await Devices(conn).get(device_id)
        history = await Assignments(conn).for_device(device_id)
        status = await DeviceStatuses(conn).get(device_id)
    now = datetime.now(UTC)
    current = next((a.patient_id for a in history if a.covers(now)), None)
    return resources.device(record, current, status)


async def _device_patients(request: Request, device_id: str) -> list[str]:
    """The patients a device was ever assigned to, newest assignment first."""
    async with database_of(request).read() as conn:
        await Devices(conn).get(device_id)
        history = await Assignments(conn).for_device(device_id)
    return [a.patient_id for a in sorted(history, key=lambda a: a.start, reverse=True)]


@router.get("/Device/{device_id}", summary="Read a Device", responses=fhir_ok("Device"))
async def read_device(
    device_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    # A device is seen by whoever may see a patient it was assigned to; an unassigned one by
    # the organisation's backend services only.
    decisions = await authorized_patients(
        request, principal, resource_type="Device", interaction=Interaction.READ
    )
    try:
        patient_ids = await _device_patients(request, device_id)
    except NotFound:
        raise NotFound(f"Device/{device_id} is not known") from None
    seen = [p for p in patient_ids if p in decisions]
    if seen:
        await audit_results(
            request,
            principal,
            decisions,
            seen[:1],
            resource_type="Device",
            interaction=Interaction.READ,
            subtype="read",
        )
    elif patient_ids or principal.role is not Role.SYSTEM:
        refused = Decision(False, Refusal.NO_CARE_RELATIONSHIP.value, principal.purpose)
        await audit_results(
            request,
            principal,
            {p: refused for p in patient_ids[:1]},
            patient_ids[:1],
            resource_type="Device",
            interaction=Interaction.READ,
            subtype="read",
        )
        raise NotFound(f"Device/{device_id} is not known")
    return FhirResponse(await _device_resource(request, device_id))


@router.get("/Device", summary="Search Devices, by patient", responses=fhir_search("Device"))
async def search_devices(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.DEVICE))
    paging = parse_paging(params)
    patient = single(params, "patient")
    patient_id = parse_reference(patient, "Patient") if patient else None
    if patient_id is not None:
        decision = await authorize(
            request,
            principal,
            patient_id=patient_id,
            resource_type="Device",
            interaction=Interaction.SEARCH,
            subtype="search",
        )
        decisions = {patient_id: decision}
    else:
        decisions = await authorized_patients(
            request, principal, resource_type="Device", interaction=Interaction.SEARCH
        )
    async with database.read() as conn:
        found = await Devices(conn).search(
            patient_id=patient_id,
            within=decisions.keys(),
            limit=paging.count + 1,
            offset=paging.offset,
        )
    page = [await _device_resource(request, d.id) for d in found[: paging.count]]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [d["patient"]["reference"].split("/")[1] for d in page if "patient" in d],
            resource_type="Device",
        )
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


@router.get(
    "/Observation/{observation_id}",
    summary="Read an Observation",
    responses=fhir_ok("Observation"),
)
async def read_observation(
    observation_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        try:
            record = await Observations(conn).get(observation_id)
        except NotFound:
            raise NotFound(f"Observation/{observation_id} is not known") from None
    decision = await authorize(
        request,
        principal,
        patient_id=record.patient_id,
        resource_type="Observation",
        interaction=Interaction.READ,
        subtype="read",
        resource_id=observation_id,
        hide=True,
    )
    category = category_of_code(record.code)
    if category is None or not decision.allows_category(category):
        raise NotFound(f"Observation/{observation_id} is not known")
    return FhirResponse(resources.observation(record))


@router.get("/Observation", summary="Search Observations", responses=fhir_search("Observation"))
async def search_observations(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    query = observation_query(params)
    paging = parse_paging(params)
    decisions: dict[str, Decision]
    if query.patient_id is not None:
        decision = await authorize(
            request,
            principal,
            patient_id=query.patient_id,
            resource_type="Observation",
            interaction=Interaction.SEARCH,
            subtype="search",
        )
        decisions = {query.patient_id: decision}
    else:
        decisions = await authorized_patients(
            request, principal, resource_type="Observation", interaction=Interaction.SEARCH
        )
    async with database.read() as conn:
        found = await Observations(conn).search(
            # One row more than the page tells whether a next page exists.
            dataclasses.replace(query, limit=query.limit + 1, access=observation_access(decisions))
        )
    shown = found[: query.limit]
    if query.patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [o.patient_id for o in shown],
            resource_type="Observation",
        )
    page = [resources.observation(o) for o in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > query.limit))
