"""The Bundle a rest-hook Subscription receives, laid out as the Subscriptions R5 Backport IG lays
out R4 notifications: a `history` Bundle whose first entry is the notification status (a
Parameters resource), followed by the resources of the event when the subscription asked for
them (`channel.payload` application/fhir+json)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from medmesh.fhir.resources import instant

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
ALERT_RULE_SYSTEM = "https://medmesh.dev/fhir/CodeSystem/alert-rule"
ALERT_SEVERITY_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-severity"
ALERT_STATUS_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/alert-status"
_FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"


@dataclass(frozen=True, slots=True)
class Change:
    """A resource the event created (POST) or changed (PUT)."""

    resource: dict[str, Any]
    method: Literal["POST", "PUT"]


@dataclass(frozen=True, slots=True)
class Pointer:
    """A resource the event created or changed, named by id only: care resources (messages,
    medications) never travel in a notification; the receiver reads them with its token."""

    resource_type: str
    id: str
    method: Literal["POST", "PUT"]


def _pointer_entry(pointer: Pointer) -> dict[str, Any]:
    reference = f"{pointer.resource_type}/{pointer.id}"
    if pointer.method == "POST":
        return {
            "fullUrl": reference,
            "request": {"method": "POST", "url": pointer.resource_type},
            "response": {"status": "201 Created", "location": reference},
        }
    return {
        "fullUrl": reference,
        "request": {"method": "PUT", "url": reference},
        "response": {"status": "200 OK"},
    }


def _full_url(resource: Mapping[str, Any]) -> str | None:
    try:
        return uuid.UUID(str(resource["id"])).urn
    except ValueError:
        return None


def _entry(change: Change) -> dict[str, Any]:
    resource = change.resource
    kind, ident = resource["resourceType"], resource["id"]
    entry: dict[str, Any] = {}
    full_url = _full_url(resource)
    if full_url is not None:
        entry["fullUrl"] = full_url
    entry["resource"] = resource
    if change.method == "POST":
        entry["request"] = {"method": "POST", "url": kind}
        entry["response"] = {"status": "201 Created", "location": f"{kind}/{ident}"}
    else:
        entry["request"] = {"method": "PUT", "url": f"{kind}/{ident}"}
        entry["response"] = {"status": "200 OK"}
    return entry


def notification_bundle(
    subscription_id: str,
    event_number: int,
    event_at: datetime,
    changes: Sequence[Change | Pointer],
    now: datetime,
) -> dict[str, Any]:
    """A notification of one event (an empty notification when `changes` is empty)."""
    status_id = str(uuid.uuid4())
    status = {
        "resourceType": "Parameters",
        "id": status_id,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": [
            {
                "name": "subscription",
                "valueReference": {"reference": f"Subscription/{subscription_id}"},
            },
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(event_number)},
                    {"name": "timestamp", "valueInstant": instant(event_at)},
                ],
            },
        ],
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": instant(now),
        "entry": [
            {
                "fullUrl": uuid.UUID(status_id).urn,
                "resource": status,
                "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
                "response": {"status": "200 OK"},
            },
            *(
                _pointer_entry(change) if isinstance(change, Pointer) else _entry(change)
                for change in changes
            ),
        ],
    }


def flag_from_alert(alert: Mapping[str, Any]) -> dict[str, Any] | None:
    """A minimal Flag for an alert as the event carries it (id, patient_id, rule, severity,
    status; title and opened_at when present). None when the event lacks them."""
    try:
        ident, patient_id, rule = str(alert["id"]), str(alert["patient_id"]), str(alert["rule"])
        severity, status = str(alert["severity"]), str(alert["status"])
    except KeyError:
        return None
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "id": ident,
        "extension": [
            {"url": ALERT_SEVERITY_EXTENSION, "valueCode": severity},
            {"url": ALERT_STATUS_EXTENSION, "valueCode": status},
        ],
        "status": "inactive" if status == "resolved" else "active",
        "category": [
            {"coding": [{"system": _FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}
        ],
        "code": {
            "coding": [{"system": ALERT_RULE_SYSTEM, "code": rule}],
            "text": str(alert.get("title") or rule),
        },
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    opened_at = alert.get("opened_at")
    if isinstance(opened_at, str) and opened_at:
        flag["period"] = {"start": opened_at}
    return flag
