"""The audit log as FHIR R4 AuditEvent resources (read and search under /fhir/AuditEvent).

Who did what to whose record, when, why, from where and with what outcome: one AuditEvent per
record of the hash chain, with the record's seq and hash in an extension so a reader can
match it against `medmesh audit verify`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import record, require_principal
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import audit_reader_basis
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.audit import AuditRecord
from medmesh.domain.errors import Forbidden, InvalidSearch, NotFound
from medmesh.fhir import search_params
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
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.audit_log import AuditLog

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SUBTYPE_SYSTEM = "https://medmesh.dev/fhir/CodeSystem/audit-subtype"
ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ACTOR_SYSTEM = "https://medmesh.dev/fhir/sid/"  # + actor kind: user, client, device, cli
ORGANIZATION_SYSTEM = "https://medmesh.dev/fhir/sid/organization"
BASIS_POLICY = "urn:medmesh:access-basis:"  # + self, care-team, consent:<id>, break-glass:<id>
CHAIN_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/audit-chain"

# Our subtypes that are FHIR RESTful interactions; the rest (export, erase, break-glass…)
# are coded in our own system.
_RESTFUL = {
    "read": "read",
    "vread": "vread",
    "search": "search-type",
    "search-type": "search-type",
    "create": "create",
    "update": "update",
    "patch": "patch",
    "delete": "delete",
    "history": "history-instance",
}
_SEARCHES = {"search", "search-type"}
_TYPE_RECORD = {"system": DCM, "code": "110110", "display": "Patient Record"}
_TYPE_QUERY = {"system": DCM, "code": "110112", "display": "Query"}
_TYPE_EXPORT = {"system": DCM, "code": "110106", "display": "Export"}
_PURPOSE_DISPLAY = {
    "TREAT": "treatment",
    "ETREAT": "Emergency Treatment",
    "PATRQT": "patient requested",
    "HRESCH": "healthcare research",
}
_ROLE_RESOURCE = {"system": OBJECT_ROLE_SYSTEM, "code": "4", "display": "Domain Resource"}
_ROLE_QUERY = {"system": OBJECT_ROLE_SYSTEM, "code": "24", "display": "Query"}
_OBSERVER = {
    "observer": {"display": "medmesh"},
    "type": [{"system": SOURCE_TYPE_SYSTEM, "code": "4", "display": "Application Server"}],
}


def _type(record: AuditRecord) -> dict[str, str]:
    if record.subtype in _SEARCHES:
        return _TYPE_QUERY
    if record.subtype == "export":
        return _TYPE_EXPORT
    return _TYPE_RECORD


def _subtype(subtype: str) -> dict[str, str]:
    if subtype in _RESTFUL:
        return {"system": RESTFUL_INTERACTION, "code": _RESTFUL[subtype]}
    return {"system": SUBTYPE_SYSTEM, "code": subtype}


def _agent(record: AuditRecord) -> dict[str, Any]:
    identifier: dict[str, Any] = {
        "system": ACTOR_SYSTEM + record.actor_kind,
        "value": record.actor_id,
    }
    if record.organization_id is not None:
        identifier["assigner"] = {
            "identifier": {"system": ORGANIZATION_SYSTEM, "value": record.organization_id}
        }
    who: dict[str, Any] = {"identifier": identifier, "display": record.actor_name}
    if record.actor_kind == "device":
        who["reference"] = f"Device/{record.actor_id}"
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if record.basis is not None:
        agent["policy"] = [BASIS_POLICY + record.basis]
    if record.source is not None:
        agent["network"] = {"address": record.source, "type": "2"}  # 2: IP address
    return agent


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if record.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient_id}"},
                "type": {"system": ENTITY_TYPE_SYSTEM, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE_SYSTEM, "code": "1", "display": "Patient"},
            }
        )
    if record.resource_type is not None and not (
        record.resource_type == "Patient" and record.resource_id == record.patient_id
    ):
        entity: dict[str, Any] = {"type": {"system": RESOURCE_TYPES, "code": record.resource_type}}
        if record.resource_id is not None:
            entity["what"] = {"reference": f"{record.resource_type}/{record.resource_id}"}
            entity["role"] = _ROLE_RESOURCE
        else:  # a search over the type
            entity["role"] = _ROLE_QUERY
        entities.append(entity)
    return entities


def audit_event(record: AuditRecord) -> dict[str, Any]:
    """One audit record as an R4 AuditEvent."""
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record.id,
        "extension": [
            {
                "url": CHAIN_EXTENSION,
                "extension": [
                    {"url": "seq", "valueInteger": record.seq},
                    {"url": "hash", "valueString": record.hash},
                ],
            }
        ],
        "type": _type(record),
        "subtype": [_subtype(record.subtype)],
        "action": record.action,
        "recorded": instant(record.recorded),
        "outcome": record.outcome,
        "agent": [_agent(record)],
        "source": _OBSERVER,
    }
    if record.purpose is not None:
        coding = {"system": PURPOSE_SYSTEM, "code": record.purpose}
        if record.purpose in _PURPOSE_DISPLAY:
            coding["display"] = _PURPOSE_DISPLAY[record.purpose]
        resource["purposeOfEvent"] = [{"coding": [coding]}]
    entities = _entities(record)
    if entities:
        resource["entity"] = entities
    return resource


async def _trail_of(
    request: Request, principal: Principal, patient_id: str, interaction: Interaction
) -> bool:
    """Whether the principal may read the accesses to this patient's record. Audited, except
    a patient reading their own trail (which would fill it with their own looking)."""
    async with database_of(request).read() as conn:
        basis = await audit_reader_basis(conn, principal, patient_id, interaction)
    if basis == "self":
        return True
    await record(
        request,
        principal,
        interaction=interaction,
        permitted=basis is not None,
        patient_id=patient_id,
        resource_type="AuditEvent",
        subtype="read" if interaction is Interaction.READ else "search",
        basis=basis or "not-audit-reader",
    )
    return basis is not None


@router.get(
    "/AuditEvent/{event_id}",
    summary="Read an AuditEvent (one audit record)",
    responses=fhir_ok("AuditEvent"),
)
async def read_audit_event(
    event_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    """The patient sees the accesses to their own record; their organisation's admins and
    backend services see them too (docs/access.md)."""
    async with database.read() as conn:
        try:
            found = await AuditLog(conn).get(event_id)
        except NotFound:
            found = None
    if (
        found is None
        or found.patient_id is None
        or not await _trail_of(request, principal, found.patient_id, Interaction.READ)
    ):
        raise NotFound(f"AuditEvent/{event_id} is not known")
    return FhirResponse(audit_event(found))


@router.get(
    "/AuditEvent",
    summary="Search AuditEvents by patient and date, newest first",
    responses=fhir_search("AuditEvent"),
)
async def search_audit_events(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.AUDIT_EVENT))
    paging = parse_paging(params)
    patient = single(params, "patient") or principal.patient_id
    if patient is None:
        raise InvalidSearch("patient is required: whose record's accesses")
    patient_id = parse_reference(patient, "Patient")
    if not await _trail_of(request, principal, patient_id, Interaction.SEARCH):
        raise Forbidden("only the patient and their organisation may read this record's accesses")
    since = until = None
    for value in params.get("date", []):
        if not value:
            raise InvalidSearch("date is empty")
        for bound in parse_date_param(value):
            if bound.op == "ge":
                since = bound.at if since is None else max(since, bound.at)
            else:
                until = bound.at if until is None else min(until, bound.at)
    async with database.read() as conn:
        found = await AuditLog(conn).search(
            patient_id=patient_id,
            since=since,
            until=until,
            count=paging.count + 1,  # one more than the page tells whether a next page exists
            offset=paging.offset,
        )
    page = [audit_event(r) for r in found[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))
