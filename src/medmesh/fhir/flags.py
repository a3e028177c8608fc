"""Alerts as FHIR Flag resources (read and search under /fhir/Flag).

A Flag is a heads-up about a patient, shown while it is active; that is what an alert is.
(DetectedIssue is for a clinical issue with a proposed mitigation, e.g. a drug interaction.)
Open and acknowledged alerts are active Flags, resolved ones inactive.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import audit_results, authorize, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import ALERTS_CATEGORY
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.fhir import search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.includes import included_resources
from medmesh.fhir.resources import instant
from medmesh.fhir.search import parse_reference, query_params, reject_unknown, single
from medmesh.fhir.search_params import names
from medmesh.fhir.search_results import parse_controls, shaped
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.alerts import Alerts, count_alerts

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

RULE_SYSTEM = "https://medmesh.dev/fhir/CodeSystem/alert-rule"
SEVERITY_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-severity"
ACKNOWLEDGEMENT_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-acknowledgement"
RESOLUTION_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-resolution"
ESCALATION_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-escalation"
PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
DETAIL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-detail"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"

_PRIORITY = {
    Severity.INFO: ("PN", "No alarm"),
    Severity.WARNING: ("PL", "Low priority"),
    Severity.URGENT: ("PM", "Medium priority"),
    Severity.CRITICAL: ("PH", "High priority"),
}
# Device rules are about the equipment, the rest about the patient's condition.
_ADMINISTRATIVE_RULES = {"device-stale"}
_STATUSES = {
    "active": (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED),
    "inactive": (AlertStatus.RESOLVED,),
}


def _category(rule: str) -> list[dict[str, Any]]:
    code, display = (
        ("admin", "Administrative")
        if rule in _ADMINISTRATIVE_RULES
        else (
            "clinical",
            "Clinical",
        )
    )
    return [{"coding": [{"system": CATEGORY_SYSTEM, "code": code, "display": display}]}]


def _who_when(who: str | None, when: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if who is not None:
        parts.append({"url": "by", "valueString": who})
    if when is not None:
        parts.append({"url": "at", "valueDateTime": instant(when)})
    return parts


def _extensions(alert: Alert) -> list[dict[str, Any]]:
    code, display = _PRIORITY[alert.severity]
    extensions: list[dict[str, Any]] = [
        {"url": SEVERITY_EXTENSION, "valueCode": alert.severity.value},
        {
            "url": PRIORITY_EXTENSION,
            "valueCodeableConcept": {
                "coding": [{"system": PRIORITY_SYSTEM, "code": code, "display": display}]
            },
        },
    ]
    if alert.observation_id is not None:
        extensions.append(
            {
                "url": DETAIL_EXTENSION,
                "valueReference": {"reference": f"Observation/{alert.observation_id}"},
            }
        )
    if alert.acknowledged_at is not None:
        extensions.append(
            {
                "url": ACKNOWLEDGEMENT_EXTENSION,
                "extension": _who_when(alert.acknowledged_by, alert.acknowledged_at),
            }
        )
    if alert.resolved_at is not None:
        parts = _who_when(alert.resolved_by, alert.resolved_at)
        if alert.resolution:
            parts.append({"url": "reason", "valueString": alert.resolution})
        extensions.append({"url": RESOLUTION_EXTENSION, "extension": parts})
    if alert.escalation_level > 0:
        parts = [{"url": "level", "valueInteger": alert.escalation_level}]
        parts += _who_when(None, alert.escalated_at)
        extensions.append({"url": ESCALATION_EXTENSION, "extension": parts})
    return extensions


def flag(alert: Alert) -> dict[str, Any]:
    period = {"start": instant(alert.opened_at)}
    if alert.resolved_at is not None:
        period["end"] = instant(alert.resolved_at)
    resource: dict[str, Any] = {
        "resourceType": "Flag",
        "id": alert.id,
        "extension": _extensions(alert),
        "status": "inactive" if alert.status is AlertStatus.RESOLVED else "active",
        "category": _category(alert.rule),
        "code": {
            "coding": [{"system": RULE_SYSTEM, "code": alert.rule, "display": alert.title}],
            "text": f"{alert.title}: {alert.detail}",
        },
        "subject": {"reference": f"Patient/{alert.patient_id}"},
        "period": period,
    }
    if alert.device_id is not None:
        resource["author"] = {"reference": f"Device/{alert.device_id}"}
    return resource


@router.get("/Flag/{flag_id}", summary="Read a Flag (an alert)", responses=fhir_ok("Flag"))
async def read_flag(
    flag_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    async with database.read() as conn:
        try:
            alert = await Alerts(conn).get(flag_id)
        except NotFound:
            raise NotFound(f"Flag/{flag_id} is not known") from None
    decision = await authorize(
        request,
        principal,
        patient_id=alert.patient_id,
        resource_type="Flag",
        interaction=Interaction.READ,
        subtype="read",
        resource_id=flag_id,
        hide=True,
    )
    if not decision.allows_category(ALERTS_CATEGORY):
        raise NotFound(f"Flag/{flag_id} is not known")
    return FhirResponse(flag(alert))


@router.get(
    "/Flag",
    summary="Search Flags (alerts) by patient and status",
    responses=fhir_search("Flag"),
)
async def search_flags(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.FLAG))
    controls = parse_controls(params, "Flag", {})
    paging = controls.paging
    patient, subject = single(params, "patient"), single(params, "subject")
    if patient and subject:
        raise InvalidSearch("give patient or subject, not both")
    reference = patient or subject
    status = single(params, "status") or None  # empty counts as not given, as elsewhere
    if status is not None and status not in _STATUSES:
        raise InvalidSearch("status must be active or inactive")
    patient_id = parse_reference(reference, "Patient") if reference else None
    decisions = await search_scope(request, principal, patient_id, resource_type="Flag")
    within = [p for p, d in decisions.items() if d.allows_category(ALERTS_CATEGORY)]
    statuses = _STATUSES[status] if status else ()
    async with database.read() as conn:
        found = (
            await Alerts(conn).search(
                patient_id=patient_id,
                statuses=statuses,
                limit=paging.count + 1,
                offset=paging.offset,
                within=within,
            )
            if controls.wants_entries
            else []
        )
        has_more = len(found) > paging.count
        total: int | None = None
        if controls.total:
            complete = controls.wants_entries and paging.offset == 0 and not has_more
            total = (
                len(found)
                if complete
                else await count_alerts(
                    conn, patient_id=patient_id, statuses=statuses, within=within
                )
            )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request, principal, decisions, [a.patient_id for a in shown], resource_type="Flag"
        )
    page = [flag(a) for a in shown]
    included = await included_resources(request, principal, page, controls) if page else []
    return FhirResponse(
        searchset(
            request,
            [shaped(r, controls) for r in page],
            paging,
            has_more and controls.wants_entries,
            total=total,
            included=included,
        )
    )
