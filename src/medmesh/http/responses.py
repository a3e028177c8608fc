"""FHIR JSON responses and OperationOutcome."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

FHIR_JSON = "application/fhir+json"


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue; `code` is from the FHIR issue-type value set."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
