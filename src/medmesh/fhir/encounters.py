"""Video visits as FHIR `Encounter` and clinician time as `ChargeItem` (read and search; in
`$everything` and `$export`). The visit note, which R4's Encounter has no element for, is the
extension VISIT_NOTE; a ChargeItem's quantity is minutes, its code the kind of time, its
context the visit's Encounter (docs/visits.md, docs/rpm-report.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import audit_results, authorize, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.domain.visits import TimeEntry, TimeKind, Visit
from medmesh.fhir.bundle import searchset
from medmesh.fhir.resources import instant
from medmesh.fhir.search import (
    parse_date_param,
    parse_paging,
    parse_reference,
    query_params,
    reject_unknown,
    single,
)
from medmesh.fhir.search_params import SearchParam
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.visits import TimeEntries, Visits

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

VISIT_NOTE = "https://medmesh.dev/fhir/StructureDefinition/visit-note"
INTERACTIVE = "https://medmesh.dev/fhir/StructureDefinition/interactive-communication"
TIME_KIND = "https://medmesh.dev/fhir/CodeSystem/clinician-time"
_PAGED = {"_count", "_offset"}
_PAGING = (
    SearchParam("_count", "number", "page size, at most 1000"),
    SearchParam("_offset", "number", "entries to skip (the next/previous links use it)"),
)
ENCOUNTER_PARAMS = (
    SearchParam("patient", "reference", "the patient"),
    SearchParam("date", "date", "when the visit began; prefixes eq, ge, gt, le, lt"),
    *_PAGING,
)
CHARGE_ITEM_PARAMS = (
    SearchParam("patient", "reference", "the patient"),
    SearchParam("entered-date", "date", "when the time was spent; prefixes ge, gt, le, lt"),
    SearchParam("performer-actor", "reference", "the clinician (Practitioner/<user id>)"),
    SearchParam("code", "token", "visit, interactive, manual or setup"),
    *_PAGING,
)


def encounter_resource(visit: Visit) -> dict[str, Any]:
    period: dict[str, str] = {"start": instant(visit.started_at)}
    if visit.ended_at is not None:
        period["end"] = instant(visit.ended_at)
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": visit.appointment_id,
        "status": "finished" if visit.ended_at is not None else "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "VR",
            "display": "virtual",
        },
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{visit.clinician_id}"}}],
        "appointment": [{"reference": f"Appointment/{visit.appointment_id}"}],
        "period": period,
    }
    if visit.note is not None:
        resource["extension"] = [{"url": VISIT_NOTE, "valueMarkdown": visit.note}]
    return resource


def charge_item_resource(entry: TimeEntry) -> dict[str, Any]:
    minutes = round(entry.duration.total_seconds() / 60, 1)
    resource: dict[str, Any] = {
        "resourceType": "ChargeItem",
        "id": entry.id,
        "extension": [{"url": INTERACTIVE, "valueBoolean": entry.interactive}],
        "status": "billable",
        "code": {"coding": [{"system": TIME_KIND, "code": entry.kind.value}]},
        "subject": {"reference": f"Patient/{entry.patient_id}"},
        "occurrencePeriod": {"start": instant(entry.start), "end": instant(entry.end)},
        "performer": [
            {
                "actor": {
                    "reference": f"Practitioner/{entry.clinician_id}",
                    "display": entry.clinician_name,
                }
            }
        ],
        "quantity": {
            "value": minutes,
            "unit": "min",
            "system": "http://unitsofmeasure.org",
            "code": "min",
        },
        "enteredDate": instant(entry.updated_at),
        "enterer": {"reference": f"Practitioner/{entry.updated_by}"},
    }
    if entry.source_id is not None:
        resource["context"] = {"reference": f"Encounter/{entry.source_id}"}
    if entry.reason is not None:
        resource["note"] = [{"text": entry.reason}]
    return resource


def _range(values: list[str]) -> tuple[datetime | None, datetime | None]:
    start: datetime | None = None
    end: datetime | None = None
    for value in values:
        for bound in parse_date_param(value):
            if bound.op == "ge":
                start = bound.at if start is None else max(start, bound.at)
            else:
                end = bound.at if end is None else min(end, bound.at)
    return start, end


async def _read(
    request: Request, principal: Principal, kind: str, patient_id: str, rid: str
) -> None:
    decision = await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type=kind,
        interaction=Interaction.READ,
        subtype="read",
        resource_id=rid,
        hide=True,
    )
    if decision.categories is not None:
        raise NotFound(f"{kind}/{rid} is not known")


@router.get(
    "/Encounter/{encounter_id}",
    summary="Read an Encounter (a video visit)",
    responses=fhir_ok("Encounter"),
)
async def read_encounter(
    encounter_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        visit = await Visits(conn).get(encounter_id)
    if visit is None:
        raise NotFound(f"Encounter/{encounter_id} is not known")
    await _read(request, principal, "Encounter", visit.patient_id, encounter_id)
    return FhirResponse(encounter_resource(visit))


@router.get(
    "/Encounter",
    summary="Search Encounters by patient and date",
    responses=fhir_search("Encounter"),
)
async def search_encounters(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, {p.name for p in ENCOUNTER_PARAMS} | _PAGED)
    paging = parse_paging(params)
    reference = single(params, "patient")
    patient_id = parse_reference(reference, "Patient") if reference else None
    start, end = _range(params.get("date", []))
    decisions = await search_scope(request, principal, patient_id, resource_type="Encounter")
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await Visits(conn).search(
            patients=within, start=start, end=end, limit=paging.count + 1, offset=paging.offset
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request, principal, decisions, [v.patient_id for v in shown], resource_type="Encounter"
        )
    page = [encounter_resource(v) for v in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


@router.get(
    "/ChargeItem/{item_id}",
    summary="Read a ChargeItem (clinician time)",
    responses=fhir_ok("ChargeItem"),
)
async def read_charge_item(
    item_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        entry = await TimeEntries(conn).get(item_id)
    if entry is None:
        raise NotFound(f"ChargeItem/{item_id} is not known")
    await _read(request, principal, "ChargeItem", entry.patient_id, item_id)
    return FhirResponse(charge_item_resource(entry))


@router.get(
    "/ChargeItem",
    summary="Search clinician time by patient, date, clinician and kind",
    responses=fhir_search("ChargeItem"),
)
async def search_charge_items(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, {p.name for p in CHARGE_ITEM_PARAMS} | _PAGED)
    paging = parse_paging(params)
    reference = single(params, "patient")
    patient_id = parse_reference(reference, "Patient") if reference else None
    performer = single(params, "performer-actor")
    clinician_id = parse_reference(performer, "Practitioner") if performer else None
    code = single(params, "code")
    kinds: tuple[TimeKind, ...] = ()
    if code is not None:
        try:
            kinds = (TimeKind(code.rpartition("|")[2]),)
        except ValueError:
            raise InvalidSearch("code must be visit, interactive, manual or setup") from None
    start, end = _range(params.get("entered-date", []))
    decisions = await search_scope(request, principal, patient_id, resource_type="ChargeItem")
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await TimeEntries(conn).search(
            patients=within,
            clinician_id=clinician_id,
            start=start,
            end=end,
            kinds=kinds,
            limit=paging.count + 1,
            offset=paging.offset,
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request, principal, decisions, [e.patient_id for e in shown], resource_type="ChargeItem"
        )
    page = [charge_item_resource(e) for e in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


async def encounter_resources(
    conn: AsyncConnection,
    patient_id: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int = 0,
) -> list[dict[str, Any]]:
    found = await Visits(conn).search(
        patients=[patient_id], start=start, end=end, limit=limit, offset=offset
    )
    return [encounter_resource(v) for v in found]


async def charge_item_resources(
    conn: AsyncConnection,
    patient_id: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int = 0,
) -> list[dict[str, Any]]:
    found = await TimeEntries(conn).search(
        patients=[patient_id], start=start, end=end, limit=limit, offset=offset
    )
    return [charge_item_resource(e) for e in found]
