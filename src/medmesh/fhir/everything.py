"""`GET /fhir/Patient/{id}/$everything`: a patient's whole record as searchset Bundle pages.

Order: the Patient, their Devices (assigned, past and present), Flags, MedicationRequests,
Appointments, Communications (secure messages), ImagingStudies, then Observations oldest
first. Each page is read on its own; the `next` link carries an opaque cursor (a resource type
and an offset, or for Observations the id of the last one returned, never a value or a time),
so paging through a year of one-per-minute data stays one index range scan a page and never
builds the whole record in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import require_principal
from medmesh.access.identity.principals import Principal
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir import resources
from medmesh.fhir.bundle import page_url, searchset_bundle
from medmesh.fhir.export_access import may_export_record
from medmesh.fhir.records import (
    RecordFilter,
    appointment_resources,
    communication_resources,
    device_resources,
    flag_resources,
    imaging_study_resources,
    medication_resources,
    observation_page,
    parse_instant,
    parse_types,
    patient_resource,
    visit_resources,
)
from medmesh.fhir.search import parse_date_range, parse_paging, query_params, reject_unknown, single
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok
from medmesh.http.responses import FhirResponse
from medmesh.store.observations import Observations

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

CURSOR = "_cursor"
_PARAMS = {"start", "end", "_since", "_type", CURSOR}


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: a resource type, and an offset or (Observation) the last id seen."""

    resource_type: str
    position: str = ""

    def encode(self) -> str:
        return f"{self.resource_type}:{self.position}"


def _parse_cursor(value: str | None, types: tuple[str, ...]) -> Cursor:
    if value is None:
        return Cursor(types[0])
    kind, sep, position = value.partition(":")
    valid = sep and kind in types
    if valid and kind != "Observation":
        valid = position.isascii() and position.isdigit()
    if not valid:
        raise InvalidSearch(f"{CURSOR} is not a cursor from a previous page of this search")
    return Cursor(kind, position)


def _filter(params: dict[str, list[str]]) -> RecordFilter:
    start, end, since = single(params, "start"), single(params, "end"), single(params, "_since")
    return RecordFilter(
        types=parse_types(single(params, "_type")),
        start=parse_date_range(start)[0] if start else None,
        end=parse_date_range(end)[1] if end else None,  # the whole of the end date is in
        since=parse_instant(since, "_since") if since else None,
    )


async def _observation_key(
    conn: AsyncConnection, patient_id: str, position: str
) -> tuple[Any, str] | None:
    if not position:
        return None
    try:
        last = await Observations(conn).get(position)
    except NotFound:
        last = None
    if last is None or last.patient_id != patient_id:
        raise InvalidSearch(f"{CURSOR} is no longer valid; start the search again")
    return (last.effective, last.id)


async def everything_page(
    conn: AsyncConnection, patient_id: str, wanted: RecordFilter, cursor: Cursor, count: int
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Up to `count` resources from `cursor` on, and the cursor of the next page (None: last).

    Each type is asked for one more than the room left, which tells whether more follow.
    """
    page: list[dict[str, Any]] = []
    first = wanted.types.index(cursor.resource_type)
    for kind in wanted.types[first:]:
        position = cursor.position if kind == cursor.resource_type else ""
        room = count - len(page)
        if kind == "Observation":
            key = await _observation_key(conn, patient_id, position)
            stored = await observation_page(conn, patient_id, wanted, key, room + 1)
            taken = stored[:room]
            page += [resources.observation(o) for o in taken]
            if len(stored) > room:
                return page, Cursor(kind, taken[-1].id if taken else position)
            continue
        offset = int(position or 0)
        found: list[dict[str, Any]]
        if kind == "Patient":
            record = await patient_resource(conn, patient_id)
            found = [record] if record is not None and offset == 0 else []
        elif kind == "Device":
            found = await device_resources(conn, patient_id, room + 1, offset)
        elif kind == "Communication":
            found = await communication_resources(conn, patient_id, wanted, room + 1, offset)
        elif kind == "ImagingStudy":
            found = await imaging_study_resources(conn, patient_id, wanted, room + 1, offset)
        elif kind == "MedicationRequest":
            found = await medication_resources(conn, patient_id, wanted, room + 1, offset)
        elif kind == "Appointment":
            found = await appointment_resources(conn, patient_id, wanted, room + 1, offset)
        elif kind in ("Encounter", "ChargeItem"):
            found = await visit_resources(kind, conn, patient_id, wanted, room + 1, offset)
        else:
            found = await flag_resources(conn, patient_id, wanted, room + 1, offset)
        page += found[:room]
        if len(found) > room:
            return page, Cursor(kind, str(offset + room))
    return page, None


def _link(request: Request, cursor: Cursor | None, count: int) -> str:
    paging = [("_count", str(count))]
    if cursor is not None:
        paging.append((CURSOR, cursor.encode()))
    return page_url(request, paging, drop=(CURSOR,))


@router.get(
    "/Patient/{patient_id}/$everything",
    summary="A patient's whole record (Patient, Devices, Flags, medications, messages, readings)",
    responses=fhir_ok("Bundle"),
)
async def patient_everything(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, _PARAMS)
    params.pop("_offset", None)  # paging here is by cursor; an offset is meaningless
    count = parse_paging(params).count
    wanted = _filter(params)
    if not wanted.types:
        raise InvalidSearch("_type names no resource type")
    cursor = _parse_cursor(single(params, CURSOR), wanted.types)
    await may_export_record(request, principal, patient_id, wanted.types)
    async with database.read() as conn:
        if await patient_resource(conn, patient_id) is None:
            raise NotFound("Patient not found")
        page, following = (
            await everything_page(conn, patient_id, wanted, cursor, count)
            if count > 0
            else ([], None)
        )
    this = None if single(params, CURSOR) is None else cursor
    links = [{"relation": "self", "url": _link(request, this, count)}]
    if following is not None:
        links.append({"relation": "next", "url": _link(request, following, count)})
    return FhirResponse(searchset_bundle(request, page, links))
