"""FHIR R4 read and search endpoints under /fhir. Every health-data route gets its caller from
`require_principal` and asks `authorize` / `authorized_patients` (access.http), which apply the
policy and audit the access."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.engine import RowMapping

from medmesh.access.http import (
    audit_results,
    authorize,
    authorized_patients,
    require_principal,
    search_scope,
)
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.oauth.smart_discovery import token_endpoint
from medmesh.access.policy.decision import Decision, Refusal, category_of_code, observation_access
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir import observation_params, patient_params, resources, search_params
from medmesh.fhir.bundle import CURSOR, base_url, keyset_links, searchset, searchset_bundle
from medmesh.fhir.capability import capability_statement
from medmesh.fhir.includes import device_resource, included_resources
from medmesh.fhir.observation_params import parse_observation_search
from medmesh.fhir.patient_params import parse_patient_search, sort_patients
from medmesh.fhir.search import parse_reference, query_params, reject_unknown, single
from medmesh.fhir.search_params import names
from medmesh.fhir.search_results import ResultControls, Summary, parse_controls, shaped
from medmesh.http.deps import DatabaseDep, SettingsDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.observation_search import (
    ObservationPage,
    count_observations,
    search_observation_page,
    search_observations,
)
from medmesh.store.observations import Observations, StoredObservation
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


def _total(controls: ResultControls, shown: int, has_more: bool) -> int | None:
    """Bundle.total when it needs no count query: the first page holds every match."""
    if controls.total and controls.paging.offset == 0 and not has_more and controls.wants_entries:
        return shown
    return None


async def _bundle(
    request: Request,
    principal: Principal,
    controls: ResultControls,
    page: Sequence[dict[str, object]],
    has_more: bool,
    total: int | None,
    links: list[dict[str, str]] | None = None,
) -> FhirResponse:
    """The searchset of a page: shaped as _summary/_elements ask, with what _include and
    _revinclude add (each decided by the policy) and Bundle.total when asked for."""
    if not controls.wants_entries:
        page = []
    included = await included_resources(request, principal, page, controls) if page else []
    plain = controls.elements is None and controls.summary in (Summary.FALSE, Summary.DATA)
    shown = list(page) if plain else [shaped(dict(r), controls) for r in page]
    if links is not None:
        total = total if controls.total else None
        return FhirResponse(searchset_bundle(request, shown, links, total=total, included=included))
    return FhirResponse(
        searchset(
            request,
            shown,
            controls.paging,
            has_more and controls.wants_entries,
            total=total if controls.total else None,
            included=included,
        )
    )


@router.get(
    "/Patient",
    summary="Search Patients (US Core Patient searches)",
    responses=fhir_search("Patient"),
)
async def search_patients(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.PATIENT))
    controls = parse_controls(params, "Patient", patient_params.SORT_KEYS)
    wanted = parse_patient_search(params)
    decisions = await authorized_patients(
        request, principal, resource_type="Patient", interaction=Interaction.SEARCH
    )
    within = [p for p in decisions if not wanted.ids or p in wanted.ids]
    async with database.read() as conn:
        # Every candidate is decrypted anyway (names are sealed), so all are filtered here.
        candidates = await Patients(conn).search(
            identifier=wanted.identifier, within=within, limit=10**9
        )
    found = sort_patients([p for p in candidates if wanted.matches(p)], controls.sort)
    paging = controls.paging
    shown = found[paging.offset : paging.offset + paging.count] if controls.wants_entries else []
    await audit_results(
        request, principal, decisions, [p.id for p in shown], resource_type="Patient"
    )
    page = [resources.patient(p) for p in shown]
    has_more = len(found) > paging.offset + paging.count
    return await _bundle(request, principal, controls, page, has_more, len(found))


async def _device_resource(request: Request, device_id: str) -> dict[str, Any]:
    async with database_of(request).read() as conn:
        return await device_resource(conn, device_id)


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


_DEVICE_SORT = {"device-name": "display_name", "_id": "id"}


@router.get("/Device", summary="Search Devices", responses=fhir_search("Device"))
async def search_devices(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.DEVICE))
    controls = parse_controls(params, "Device", _DEVICE_SORT)
    patient = single(params, "patient")
    patient_id = parse_reference(patient, "Patient") if patient else None
    ids = {t for v in params.get("_id", []) for t in v.split(",") if t}
    serials = {_device_serial(t) for v in params.get("identifier", []) for t in v.split(",") if t}
    kinds = [_device_kind(t) for v in params.get("type", []) for t in v.split(",") if t]
    decisions = await search_scope(request, principal, patient_id, resource_type="Device")
    async with database.read() as conn:
        # A clinic's devices are few; filtering and sorting the visible ones here is cheap.
        found = await Devices(conn).search(
            patient_id=patient_id, within=decisions.keys(), limit=10**9
        )
    found = [
        d
        for d in found
        if (not ids or d.id in ids)
        and (not serials or d.serial_number in serials)
        and (not kinds or any(_type_matches(d.type, kind) for kind in kinds))
    ]
    for key, descending in reversed(controls.sort or (("display_name", False),)):
        found.sort(key=lambda d: str(getattr(d, key)), reverse=descending)
    paging = controls.paging
    window = found[paging.offset : paging.offset + paging.count] if controls.wants_entries else []
    page = [await _device_resource(request, d.id) for d in window]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [d["patient"]["reference"].split("/")[1] for d in page if "patient" in d],
            resource_type="Device",
        )
    has_more = len(found) > paging.offset + paging.count
    return await _bundle(request, principal, controls, page, has_more, len(found))


def _device_kind(token: str) -> tuple[str | None, str]:
    """`type=system|code`, `|code` (no system) or `code` (any system)."""
    system, sep, code = token.rpartition("|")
    if not code:
        raise InvalidSearch("type: give system|code or a code")
    return (system if sep else None), code


def _type_matches(stored: str | None, wanted: tuple[str | None, str]) -> bool:
    if stored is None:
        return False
    system, _, code = stored.rpartition("|")
    return code == wanted[1] and (wanted[0] is None or wanted[0] == system)


def _device_serial(token: str) -> str:
    system, sep, value = token.rpartition("|")
    if sep and system not in ("", resources.DEVICE_SERIAL_SYSTEM):
        raise InvalidSearch(
            f"identifier: devices are identified by {resources.DEVICE_SERIAL_SYSTEM}|serial"
        )
    return value


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
async def search_observations_route(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.OBSERVATION))
    controls = parse_controls(params, "Observation", observation_params.SORT_KEYS)
    parsed = parse_observation_search(params)
    decisions: dict[str, Decision] = await search_scope(
        request, principal, parsed.patient_id, resource_type="Observation", audit_beside_work=True
    )
    wanted = dataclasses.replace(parsed.filter, access=observation_access(decisions))
    paging = controls.paging
    sort: Any = controls.sort  # keys already mapped to stored columns (SORT_KEYS)
    # Sorted by date (the default) and without a value filter, pages follow a keyset cursor;
    # otherwise (other sort keys, value-quantity) `_offset`.
    keyset = wanted.keep is None and all(key == "effective" for key, _ in sort) and len(sort) <= 1
    cursor_text = single(params, CURSOR)
    if cursor_text is not None and (not keyset or paging.offset):
        raise InvalidSearch("_cursor pages only a date-sorted search without _offset")
    after = _parse_cursor(cursor_text) if cursor_text else None
    use_cursor = keyset and not paging.offset
    async with database.read() as conn:
        # One row more than the page tells whether a next page exists.
        found: ObservationPage | list[StoredObservation] = []
        if controls.wants_entries and use_cursor:
            found = await search_observation_page(
                conn, wanted, sort, limit=paging.count + 1, after=after
            )
        elif controls.wants_entries:
            found = await search_observations(
                conn, wanted, sort, limit=paging.count + 1, offset=paging.offset
            )
        has_more = len(found) > paging.count
        total = None if after is not None else _total(controls, len(found), has_more)
        # A page reached by `_cursor` counts again only when `_total` is asked for: the first
        # page gave the total, and the count is the dearest part of a deep page.
        counted = controls.total and (after is None or "_total" in params)
        if counted and total is None:
            total = await count_observations(conn, wanted)
    if isinstance(found, ObservationPage):
        rows = found.rows[: paging.count]
        shown_patients = [r["patient_id"] for r in rows]
        last = (rows[-1]["effective"], rows[-1]["id"]) if rows else None
        page = [_row_resource(found, r) for r in rows]
    else:
        shown = found[: paging.count]
        shown_patients = [o.patient_id for o in shown]
        last = (shown[-1].effective, shown[-1].id) if shown else None
        page = [resources.observation(o) for o in shown]
    if parsed.patient_id is None:
        await audit_results(
            request, principal, decisions, shown_patients, resource_type="Observation"
        )
    links = None
    if use_cursor:
        following = _cursor(*last) if has_more and last and controls.wants_entries else None
        links = keyset_links(request, paging.count, cursor_text, following)
    return await _bundle(request, principal, controls, page, has_more, total, links)


def _row_resource(page: ObservationPage, row: RowMapping) -> dict[str, Any]:
    """A row of the page as its Observation: straight from the row's columns when it holds one
    value and no laboratory findings, through the stored observation otherwise."""
    stored = page.full.get(row["id"])
    if stored is not None:
        return resources.observation(stored)
    return resources.simple_observation(
        row["id"],
        row["patient_id"],
        row["device_id"],
        row["code"],
        row["effective"],
        row["received_at"],
        page.values[row["id"]],
        row["unit"],
    )


def _cursor(effective: datetime, ident: str) -> str:
    return f"{effective.isoformat()}~{ident}"


def _parse_cursor(text: str) -> tuple[datetime, str]:
    moment, _, ident = text.rpartition("~")
    try:
        effective = datetime.fromisoformat(moment)
    except ValueError:
        raise InvalidSearch("_cursor is not one this server gave out") from None
    if effective.tzinfo is None or not ident:
        raise InvalidSearch("_cursor is not one this server gave out")
    return effective, ident
