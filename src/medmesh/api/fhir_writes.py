"""FHIR writes from gateways: `POST /fhir/Observation` and `POST /fhir` with a transaction or
batch Bundle. Devices authenticate with their own credential, as on `/ingest/v1`; every
Observation goes through the one ingest pipeline (validation, dedupe, storage, rules, dead
letters). A transaction is checked whole first and refused whole; a batch stores what it can.
Patient and Device entries are conditional creates that must match what the clinic registered:
medmesh never creates patients or devices from a gateway (docs/fhir-api.md, "Writing")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from medmesh.access.audit.entries import AuditEntry
from medmesh.access.http import audit, require_device
from medmesh.access.identity.principals import DevicePrincipal
from medmesh.domain.errors import InvalidReading, InvalidRequest, RejectReason
from medmesh.domain.reading import observation_id
from medmesh.fhir import resources
from medmesh.http.deps import database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok
from medmesh.http.responses import FhirResponse, operation_outcome
from medmesh.ingest.fhir_observation import (
    FhirObservation,
    identifier_token,
    payload_text,
    validation_problem,
)
from medmesh.ingest.fhir_references import CHANNEL, device_by_identifier, observation_batch
from medmesh.ingest.http import check_media_type, pipeline_of
from medmesh.ingest.pipeline import DeviceBatch, IngestResult, Rejection
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter
from medmesh.store.observations import Observations
from medmesh.store.registry import Assignments, Patients

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

MAX_ENTRIES = 1000

_OBSERVATION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/fhir+json": {
            "schema": {
                "type": "object",
                "required": ["resourceType", "status", "code"],
                "properties": {"resourceType": {"const": "Observation"}},
            }
        }
    },
}
_BUNDLE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/fhir+json": {
            "schema": {
                "type": "object",
                "required": ["resourceType", "type"],
                "properties": {
                    "resourceType": {"const": "Bundle"},
                    "type": {"enum": ["transaction", "batch"]},
                    "entry": {"type": "array", "maxItems": MAX_ENTRIES},
                },
            }
        }
    },
}


class _EntryError(Exception):
    """One Bundle entry refused: HTTP status and FHIR issue type for its response."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


@dataclass(slots=True)
class _Entry:
    index: int
    full_url: str | None
    response: dict[str, Any] | None = None  # decided without the pipeline
    observation: FhirObservation | None = None
    batch: DeviceBatch | None = None
    error: _EntryError | None = None
    letters: list[DeadLetter] = field(default_factory=list)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None


def _error_from(rejection: Rejection | InvalidReading) -> _EntryError:
    reason = rejection.reason.value
    detail = rejection.detail if isinstance(rejection, Rejection) else rejection.message
    code = "invalid" if rejection.reason is RejectReason.MALFORMED else "business-rule"
    return _EntryError(code, f"{reason}: {detail}", reason)


def _outcome(error: _EntryError, expression: str | None = None) -> dict[str, Any]:
    outcome = operation_outcome(error.code, error.message)
    if expression is not None:
        outcome["issue"][0]["expression"] = [expression]
    return outcome


def _dead_letter(
    device_id: str, payload: str, message_id: str | None, error: _EntryError
) -> DeadLetter:
    return DeadLetter(
        datetime.now(UTC),
        CHANNEL,
        device_id,
        message_id,
        error.reason or RejectReason.MALFORMED.value,
        error.message,
        payload,
    )


async def _audit_created(request: Request, device_id: str, stored: list[tuple[str, str]]) -> None:
    """One create record per patient written for: (patient id, observation id) pairs."""
    by_patient: dict[str, str] = {}
    for patient_id, oid in stored:
        by_patient.setdefault(patient_id, oid)
    await audit(
        request,
        [
            AuditEntry(
                action="C",
                subtype="create",
                actor_kind="device",
                actor_id=device_id,
                actor_name=device_id,
                resource_type="Observation",
                resource_id=oid,
                patient_id=patient_id,
                source=request.client.host if request.client is not None else None,
            )
            for patient_id, oid in by_patient.items()
        ],
    )


async def _stored_patients(database: Database, ids: list[str]) -> list[tuple[str, str]]:
    async with database.read() as conn:
        found = await Observations(conn).get_many(ids)
    return [(o.patient_id, o.id) for o in found]


def _now_instant() -> str:
    return resources.instant(datetime.now(UTC).replace(microsecond=0))


@router.post(
    "/Observation",
    status_code=201,
    summary="Create an Observation (a device's reading), idempotent by identifier",
    responses={**fhir_ok("Observation", 201), **fhir_ok("Observation")},
    openapi_extra={"requestBody": _OBSERVATION_BODY},
)
async def create_observation(
    request: Request, device: DevicePrincipal = Depends(require_device)
) -> FhirResponse:
    check_media_type(request)
    database = database_of(request)
    resource = _json(await request.body())
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        raise InvalidRequest("the body must be an Observation resource")
    if_none_exist = request.headers.get("if-none-exist")
    pipeline = pipeline_of(request)
    try:
        batch = await observation_batch(database, device.device_id, resource, if_none_exist, {})
    except InvalidReading as exc:
        error = _error_from(exc)
        letter = _dead_letter(device.device_id, payload_text(resource), None, error)
        await pipeline.ingest_many([], refused=[letter])
        raise InvalidRequest(error.message) from None
    (result,) = await pipeline.ingest_many([batch])
    if result.rejected:
        raise InvalidRequest(_error_from(result.rejected[0]).message)
    observation_id = _observation_id(batch, result)
    async with database.read() as conn:
        record = await Observations(conn).get(observation_id)
    if result.stored:
        await _audit_created(request, device.device_id, [(record.patient_id, record.id)])
    location = f"{str(request.base_url).rstrip('/')}/fhir/Observation/{record.id}"
    return FhirResponse(
        resources.observation(record),
        status_code=201 if result.stored else 200,
        headers={"Location": location},
    )


def _observation_id(batch: DeviceBatch, result: IngestResult) -> str:
    if result.stored:
        return result.stored[0]
    message_id = batch.items[0].message_id
    assert message_id is not None
    return observation_id(batch.device_id, message_id)


async def _conditional_entry(
    database: Database, device_id: str, resource_type: str, resource: Any, request: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A Patient or Device entry: a conditional create that must match a registered record
    (and, for a patient, the one this device is assigned to now). Returns its id and response."""
    model = Patient if resource_type == "Patient" else Device
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise _EntryError("invalid", validation_problem(exc, resource_type)) from None
    query = request.get("ifNoneExist")
    if not isinstance(query, str):
        raise _EntryError(
            "not-supported",
            f"medmesh does not create a {resource_type} from a gateway: send it as a "
            "conditional create (ifNoneExist=identifier=system|value) of a registered one",
        )
    try:
        token = identifier_token(query)
    except InvalidRequest as exc:
        raise _EntryError("not-supported", str(exc)) from None
    system, sep, value = token.rpartition("|")
    if resource_type == "Device":
        found = await device_by_identifier(database, value)
        if found is None:
            raise _EntryError(
                "not-found",
                "no registered device has this identifier; devices are registered by the "
                "clinic (medmesh device register), not over FHIR",
            )
        return found, {"status": "200 OK", "location": f"Device/{found}"}
    async with database.read() as conn:
        patient = await Patients(conn).find_by_identifier(system if sep else None, value)
        history = await Assignments(conn).for_device(device_id)
    now = datetime.now(UTC)
    assigned = {a.patient_id for a in history if a.covers(now)}
    if patient is None or patient.id not in assigned:
        raise _EntryError(
            "business-rule",
            "the patient is not one this device is assigned to; patients are registered by "
            "the clinic, not over FHIR",
            RejectReason.NO_PATIENT.value,
        )
    return patient.id, {"status": "200 OK", "location": f"Patient/{patient.id}"}


async def _read_entries(database: Database, device_id: str, raw: list[Any]) -> list[_Entry]:
    """Every entry decided as far as it can be without storing: Patient and Device entries
    resolved first (Observations refer to them by fullUrl), then each Observation parsed."""
    entries: list[_Entry] = []
    local: dict[str, str] = {}
    for index, item in enumerate(raw):
        entry = _Entry(index, item.get("fullUrl") if isinstance(item, dict) else None)
        entries.append(entry)
        request = item.get("request") if isinstance(item, dict) else None
        resource = item.get("resource") if isinstance(item, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(request, dict) or request.get("method") != "POST":
            entry.error = _EntryError(
                "not-supported", "each entry must be a POST (create) with its resource"
            )
        elif request.get("url") != kind or kind not in ("Observation", "Patient", "Device"):
            entry.error = _EntryError(
                "not-supported",
                "entries create Observations (with Patient and Device conditional creates); "
                "request.url must name the resource's type",
            )
        elif kind in ("Patient", "Device"):
            try:
                found, entry.response = await _conditional_entry(
                    database, device_id, kind, resource, request
                )
            except _EntryError as exc:
                entry.error = exc
            else:
                if entry.full_url:
                    local[entry.full_url] = found
    for entry, item in zip(entries, raw, strict=True):
        if entry.error is not None or entry.response is not None:
            continue
        try:
            entry.batch = await observation_batch(
                database, device_id, item["resource"], item["request"].get("ifNoneExist"), local
            )
        except InvalidReading as exc:
            entry.error = _error_from(exc)
            payload = payload_text(item["resource"])
            entry.letters.append(_dead_letter(device_id, payload, None, entry.error))
        except InvalidRequest as exc:
            entry.error = _EntryError("not-supported", str(exc))
    return entries


def _response_bundle(kind: str, entries: list[_Entry]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [{"response": e.response} for e in entries],
    }


@router.post(
    "",
    summary="Process a transaction or batch Bundle of Observations from a gateway",
    responses=fhir_ok("Bundle"),
    openapi_extra={"requestBody": _BUNDLE_BODY},
)
async def post_bundle(
    request: Request, device: DevicePrincipal = Depends(require_device)
) -> FhirResponse:
    check_media_type(request)
    database = database_of(request)
    document = _json(await request.body())
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise InvalidRequest("the body must be a Bundle resource")
    kind = document.get("type")
    if kind not in ("transaction", "batch"):
        raise InvalidRequest("Bundle.type must be transaction or batch")
    raw = document.get("entry") or []
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise InvalidRequest(f"Bundle.entry must be a list of at most {MAX_ENTRIES} entries")
    try:
        # The Bundle's own structure; each entry's resource is validated (and reported) below.
        Bundle.model_validate({**document, "entry": [_shell(e) for e in raw]})
    except ValidationError as exc:
        raise InvalidRequest(validation_problem(exc, "Bundle")) from None
    entries = await _read_entries(database, device.device_id, raw)
    pipeline = pipeline_of(request)
    pending = [e for e in entries if e.batch is not None]
    if kind == "transaction":
        checked = await pipeline.check([e.batch for e in pending if e.batch is not None])
        for entry, refused in zip(pending, checked, strict=True):
            if refused:
                assert entry.batch is not None
                entry.error = _error_from(refused[0])
                item = entry.batch.items[0]
                entry.letters.append(
                    _dead_letter(device.device_id, item.payload, item.message_id, entry.error)
                )
        bad = [e for e in entries if e.error is not None]
        if bad:
            # Nothing is stored; the refused Observations are dead-lettered like any reading.
            await pipeline.ingest_many([], refused=[x for e in bad for x in e.letters])
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    _outcome(e.error, f"Bundle.entry[{e.index}]")["issue"][0]
                    for e in bad
                    if e.error is not None
                ],
            }
            return FhirResponse(outcome, status_code=400)
    letters = [x for e in entries for x in e.letters]
    batches = [e.batch for e in pending if e.batch is not None]
    results = await pipeline.ingest_many(batches, refused=letters)
    stored_ids: list[str] = []
    for entry, result in zip(pending, results, strict=True):
        assert entry.batch is not None
        if result.rejected:
            entry.error = _error_from(result.rejected[0])
            continue
        oid = _observation_id(entry.batch, result)
        stored_ids.extend(result.stored)
        entry.response = {
            "status": "201 Created" if result.stored else "200 OK",
            "location": f"Observation/{oid}",
            "lastModified": _now_instant(),
        }
    for entry in entries:
        if entry.error is not None:
            entry.response = {
                "status": "400 Bad Request",
                "outcome": _outcome(entry.error, f"Bundle.entry[{entry.index}]"),
            }
    if stored_ids:
        await _audit_created(
            request, device.device_id, await _stored_patients(database, stored_ids)
        )
    return FhirResponse(_response_bundle(kind, entries))


def _shell(entry: Any) -> Any:
    """An entry without its resource, for validating the Bundle's own elements."""
    if not isinstance(entry, dict):
        return entry
    return {k: v for k, v in entry.items() if k != "resource"}
