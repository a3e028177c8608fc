"""FHIR Bulk Data Access (STU2) `$export`: kick-off, status, files, cancel; and `Group` read.

https://hl7.org/fhir/uv/bulkdata/export.html. A job and its files belong to the token that
started it: any other caller gets the same 404 as for a job that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from medmesh.access.http import require_principal
from medmesh.access.identity.bearer import principal_for_token_id
from medmesh.access.identity.principals import Principal
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir.bundle import base_url
from medmesh.fhir.export_access import exportable_patients, visible_members
from medmesh.fhir.export_jobs import ExportRunner, ExportSettings, new_job, open_file
from medmesh.fhir.groups import group_resource, panel
from medmesh.fhir.records import parse_instant, parse_types
from medmesh.fhir.resources import instant
from medmesh.fhir.search import query_params, reject_unknown, single
from medmesh.http.deps import DatabaseDep, database_of, provided, provided_or_none
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok
from medmesh.http.responses import FhirResponse, operation_outcome
from medmesh.store.exports import CANCELLED, COMPLETE, FAILED, ExportJob, ExportJobs

router = APIRouter(
    prefix="/fhir",
    tags=["fhir bulk data"],
    default_response_class=FhirResponse,
    responses=ERROR_RESPONSES,
)
_KICKED_OFF: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: poll the Content-Location URL for the status"}
}
_STATUS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Complete: the manifest",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    202: {"description": "In progress (X-Progress, Retry-After)"},
}

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {NDJSON, "application/ndjson", "ndjson"}
KICK_OFF_PARAMS = {"_outputFormat", "_type", "_since"}
RETRY_AFTER_SECONDS = 2


# Only the process that runs export jobs has a runner (MEDMESH_EXPORT_RUNNER).
_runner = provided_or_none(ExportRunner)
export_settings_of = provided(ExportSettings)


def _wants_async(request: Request) -> bool:
    # Prefer: respond-async[, handling=lenient]: preferences are comma-separated, each may
    # carry ;parameters.
    prefer = request.headers.get("prefer", "")
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


async def _kick_off(
    request: Request, principal: Principal, kind: str, requested: list[str] | None
) -> Response:
    if not _wants_async(request):
        raise InvalidSearch("$export runs asynchronously: send the header Prefer: respond-async")
    params = query_params(request)
    reject_unknown(params, KICK_OFF_PARAMS)
    output_format = single(params, "_outputFormat")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise InvalidSearch(
            "_outputFormat: only application/fhir+ndjson (or application/ndjson, ndjson) is "
            "supported"
        )
    types = parse_types(single(params, "_type"))
    since_text = single(params, "_since")
    since = parse_instant(since_text, "_since") if since_text else None
    settings = export_settings_of(request)
    job = new_job(
        token_id=principal.token_id or principal.id,
        request_url=str(request.url),
        kind=kind,
        patient_ids=await exportable_patients(request, principal, requested, types),
        types=types,
        since=since,
        expiry=settings.expiry,
    )
    async with database_of(request).write() as conn:
        await ExportJobs(conn).add(job)
    runner = _runner(request)
    if runner is not None:
        runner.wake()
    location = f"{base_url(request)}/$export-status/{job.id}"
    return Response(status_code=202, headers={"Content-Location": location})


@router.get(
    "/Patient/$export",
    summary="Bulk export of every patient the caller may see (async, NDJSON)",
    status_code=202,
    responses=_KICKED_OFF,
)
async def export_patients(
    request: Request, principal: Principal = Depends(require_principal)
) -> Response:
    return await _kick_off(request, principal, "patient", None)


@router.get(
    "/Group/{group_id}/$export",
    summary="Bulk export of a group's members (async, NDJSON)",
    status_code=202,
    responses=_KICKED_OFF,
)
async def export_group(
    group_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    async with database.read() as conn:
        found = await panel(conn, group_id, principal)
    return await _kick_off(request, principal, "group", list(found.patient_ids))


@router.get(
    "/Group/{group_id}", summary="Read a Group (a panel of patients)", responses=fhir_ok("Group")
)
async def read_group(
    group_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        found = await panel(conn, group_id, principal)
    visible = await visible_members(request, principal, list(found.patient_ids))
    return FhirResponse(group_resource(found, visible))


async def _own_job(request: Request, principal: Principal, job_id: str) -> ExportJob:
    """The job, if the caller started it (with any token of the same account or client: a
    backend service's next 5-minute token fetches what the previous one started)."""
    async with database_of(request).read() as conn:
        job = await ExportJobs(conn).get(job_id)
        owner = None if job is None else await principal_for_token_id(conn, job.token_id)
    # Another caller's job answers exactly like no job: its existence is not told either.
    if (
        job is None
        or owner is None
        or (owner.kind, owner.id) != (principal.kind, principal.id)
        or job.status == CANCELLED
    ):
        raise NotFound("export job not found")
    return job


def _manifest(request: Request, job: ExportJob, files: list[Any]) -> dict[str, Any]:
    base = base_url(request)

    def entry(file: Any) -> dict[str, Any]:
        url = f"{base}/$export-file/{job.id}/{file.name}"
        return {"type": file.resource_type, "url": url, "count": file.count}

    return {
        "transactionTime": instant(job.created_at),
        "request": job.request,
        "requiresAccessToken": True,
        "output": [entry(f) for f in files if f.resource_type != "OperationOutcome"],
        "error": [entry(f) for f in files if f.resource_type == "OperationOutcome"],
    }


@router.get(
    "/$export-status/{job_id}",
    summary="Status of a bulk export; its manifest when done",
    responses=_STATUS,
)
async def export_status(
    job_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    job = await _own_job(request, principal, job_id)
    if job.status == FAILED:
        return FhirResponse(
            operation_outcome("exception", job.error or "the export failed"), status_code=500
        )
    if job.status != COMPLETE:
        runner = _runner(request)
        progress = (runner.progress(job.id) if runner is not None else None) or job.status
        return Response(
            status_code=202,
            headers={"X-Progress": progress, "Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    async with database.read() as conn:
        files = await ExportJobs(conn).files(job.id)
    return JSONResponse(
        _manifest(request, job, files),
        headers={"Expires": format_datetime(job.expires_at, usegmt=True)},
    )


@router.delete(
    "/$export-status/{job_id}",
    summary="Cancel a bulk export and delete its files",
    status_code=202,
    responses={202: {"description": "Cancelled; its files are deleted"}},
)
async def cancel_export(
    job_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    job = await _own_job(request, principal, job_id)
    async with database.write() as conn:
        cancelled = await ExportJobs(conn).cancel(job.id, datetime.now(UTC))
    if not cancelled:
        raise NotFound("export job not found")
    return Response(status_code=202)


@router.get(
    "/$export-file/{job_id}/{name}",
    summary="One NDJSON file of a completed bulk export",
    response_class=Response,
)
async def export_file(
    job_id: str,
    name: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    job = await _own_job(request, principal, job_id)
    async with database.read() as conn:
        file = await ExportJobs(conn).file(job.id, name) if job.status == COMPLETE else None
    if file is None:
        raise NotFound("export file not found")
    return Response(await open_file(database, job.id, file), media_type=NDJSON)
