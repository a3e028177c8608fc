"""What the OpenAPI document declares about answers: every error is a FHIR OperationOutcome
(application/fhir+json), and FHIR routes answer with the resource type they name. Clients and
fuzzers (schemathesis) check responses against these declarations."""

from __future__ import annotations

from typing import Any

from medmesh.http.responses import FHIR_JSON

OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}


def _outcome(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {FHIR_JSON: {"schema": OPERATION_OUTCOME_SCHEMA}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


# Declared on every API router. "4XX" stands for the rarer refusals (405, 409, 414, 431…) and
# keeps FastAPI from declaring its own 422, which medmesh never sends (validation is a 400).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _outcome("Invalid request; the diagnostics say what and where, not the value"),
    401: _outcome("No valid credential", **{"WWW-Authenticate": "Bearer"}),
    403: _outcome("The credential does not allow this request"),
    404: _outcome("No such resource, or not visible to this credential"),
    413: _outcome("The request body is larger than the route's limit"),
    429: _outcome(
        "Too many requests from this client", **{"Retry-After": "Seconds to wait before retrying"}
    ),
    "4XX": _outcome("Another client error"),
    500: _outcome("Internal error (logged without its message)"),
}


def _resource_schema(resource_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": resource_type}},
    }


def fhir_ok(resource_type: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a FHIR route answering with one `resource_type`."""
    return {
        status: {
            "description": resource_type,
            "content": {FHIR_JSON: {"schema": _resource_schema(resource_type)}},
        }
    }


def fhir_search(resource_type: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a FHIR search: a searchset Bundle of `resource_type`."""
    bundle = {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "searchset"},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"resource": _resource_schema(resource_type)},
                },
            },
        },
    }
    return {
        200: {
            "description": f"Bundle of {resource_type}",
            "content": {FHIR_JSON: {"schema": bundle}},
        }
    }


EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events; the stream stays open",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
