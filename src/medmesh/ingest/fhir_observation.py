"""FHIR Observations as readings: what a gateway speaking FHIR (an HL7 Personal Health Device
gateway, a phone app) sends, turned into the `Incoming` every adapter hands the pipeline.

The resource is validated with `fhir.resources` (R4B) first; then its code (LOINC, or IEEE
11073 MDC as PHD gateways send it), value, unit and time become a `RawReading`. The message id
that makes resending safe is the Observation's identifier (or the `If-None-Exist` identifier),
else a digest of the resource. Patient and device references are returned as sent, for the
route to resolve against the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from medmesh.domain import mdc
from medmesh.domain.errors import InvalidReading, InvalidRequest, RejectReason
from medmesh.domain.reading import RawReading, is_valid_message_id
from medmesh.domain.timestamps import TimestampError, parse_rfc3339
from medmesh.domain.vocabulary import LOINC, UCUM, measure_by_code, measure_by_key
from medmesh.ingest.incoming import Incoming

__all__ = [
    "FhirObservation",
    "identifier_token",
    "parse_observation",
    "payload_text",
    "validation_problem",
]

# Statuses of an Observation that carries a result; registered/cancelled/entered-in-error do not.
_RESULT_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
_DIGEST_PREFIX = "fhir-sha256:"


@dataclass(frozen=True, slots=True)
class FhirObservation:
    """One Observation as received: the reading (or why it is refused) and its references."""

    incoming: Incoming
    subject: dict[str, Any] | None
    device: dict[str, Any] | None


def payload_text(resource: Any) -> str:
    """The resource as text for a dead letter, whatever JSON it holds (orjson refuses integers
    past 64 bits, which Python's parser produces)."""
    try:
        return orjson.dumps(resource).decode()
    except TypeError:
        return json.dumps(resource, default=str)


def validation_problem(error: ValidationError, where: str) -> str:
    """What `fhir.resources` refused, by element path and rule, never by value."""
    parts = []
    for problem in error.errors()[:5]:
        path = ".".join(_plain(str(p)) for p in problem["loc"])
        parts.append(f"{where}.{path}: {_plain(problem['msg'].splitlines()[0], 120)}")
    # The detail goes into dead_letters.detail (500 characters of text) and the answer.
    return ("the resource is not valid FHIR R4: " + "; ".join(parts))[:480]


def _plain(text: str, limit: int = 40) -> str:
    """An element name as sent, made printable (a NUL cannot be stored as text)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def identifier_token(query: str) -> str:
    """The identifier an `If-None-Exist` (or conditional reference) names: `identifier=sys|val`
    is the only search medmesh honours there."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier" or not pairs[0][1].strip("|"):
        raise InvalidRequest(
            "only a search by identifier (identifier=system|value) is supported in "
            "If-None-Exist and conditional references"
        )
    return pairs[0][1]


def _malformed(message: str) -> InvalidReading:
    return InvalidReading(RejectReason.MALFORMED, message)


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _measure_name(concept: Any) -> str:
    """A LOINC code medmesh knows, else an MDC code it maps, else the first LOINC code (which
    the pipeline refuses as unknown)."""
    codings = _codings(concept)
    loinc = [str(c.get("code", "")) for c in codings if c.get("system") == LOINC]
    for code in loinc:
        if measure_by_code(code) is not None:
            return code
    for coding in codings:
        if coding.get("system") == mdc.MDC_SYSTEM:
            metric = mdc.metric(str(coding.get("code", "")))
            if metric is not None and metric.component is None:
                return metric.measure
    return loinc[0] if loinc else ""


def _component_key(concept: Any, measure: str) -> str | None:
    found = measure_by_key(measure) or measure_by_code(measure)
    if found is None:
        return None
    for coding in _codings(concept):
        code = str(coding.get("code", ""))
        if coding.get("system") == LOINC:
            part = next((c for c in found.components if c.code == code), None)
            if part is not None:
                return part.key
        if coding.get("system") == mdc.MDC_SYSTEM:
            metric = mdc.metric(code)
            if metric is not None and metric.component is not None:
                return metric.component
    return None


def _quantity(holder: dict[str, Any], where: str) -> tuple[float, str]:
    quantity = holder.get("valueQuantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        raise _malformed(f"{where} must have a valueQuantity with a value")
    system = quantity.get("system")
    unit = quantity.get("code") if system in (None, UCUM) else None
    unit = unit or quantity.get("unit")
    if not isinstance(unit, str) or not unit:
        raise _malformed(f"{where}.valueQuantity must carry a UCUM code")
    try:
        return float(quantity["value"]), unit
    except (TypeError, ValueError, OverflowError):
        raise _malformed(f"{where}.valueQuantity.value must be a finite number") from None


def _value(resource: dict[str, Any], measure: str) -> tuple[float | dict[str, float], str]:
    components = resource.get("component")
    if "valueQuantity" in resource or not components:
        return _quantity(resource, "Observation")
    parts: dict[str, float] = {}
    units = set()
    for index, component in enumerate(components):
        key = _component_key(component.get("code"), measure)
        if key is None:
            continue  # a component medmesh does not store (e.g. mean arterial pressure)
        value, unit = _quantity(component, f"Observation.component[{index}]")
        parts[key] = value
        units.add(unit)
    if not parts:
        raise _malformed("Observation has no valueQuantity and no component medmesh knows")
    if len(units) != 1:
        raise _malformed("the components of a panel must share one unit")
    return parts, units.pop()


def _effective(resource: dict[str, Any]) -> datetime:
    text = (
        resource.get("effectiveDateTime")
        or resource.get("effectiveInstant")
        or (resource.get("effectivePeriod") or {}).get("start")
    )
    if not isinstance(text, str):
        raise _malformed("Observation needs effectiveDateTime, effectiveInstant or a period start")
    try:
        return parse_rfc3339(text)
    except TimestampError:
        raise _malformed(
            "Observation.effective[x] must be a date-time with a UTC offset, "
            "e.g. 2026-11-25T08:00:00Z"
        ) from None


def _message_id(resource: dict[str, Any], if_none_exist: str | None) -> str:
    if if_none_exist is not None:
        token = identifier_token(if_none_exist)
        sent = [_identifier_text(i) for i in resource.get("identifier") or []]
        if sent and token not in sent and token.rpartition("|")[2] not in sent:
            raise _malformed("If-None-Exist names an identifier the Observation does not carry")
        return _bounded(token)
    for identifier in resource.get("identifier") or []:
        text = _identifier_text(identifier)
        if text:
            return _bounded(text)
    # No identifier: the same resource sent again is the same reading.
    unkeyed = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
    canonical = json.dumps(unkeyed, sort_keys=True, separators=(",", ":"), default=str)
    return _DIGEST_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _identifier_text(identifier: Any) -> str:
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return ""
    system = identifier.get("system")
    return f"{system}|{identifier['value']}" if system else str(identifier["value"])


def _bounded(text: str) -> str:
    if is_valid_message_id(text):
        return text
    return _DIGEST_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:40]


def parse_observation(resource: Any, if_none_exist: str | None = None) -> FhirObservation:
    """Validate one Observation and turn it into a reading. A resource that is not valid FHIR
    raises InvalidReading(MALFORMED) naming the element; an If-None-Exist medmesh cannot honour
    raises InvalidRequest. A valid resource whose value medmesh cannot use comes back as an
    `Incoming` with its error, for the pipeline to dead-letter."""
    payload = payload_text(resource)
    try:
        Observation.model_validate(resource)
    except ValidationError as exc:
        raise _malformed(validation_problem(exc, "Observation")) from None
    assert isinstance(resource, dict)
    message_id = _message_id(resource, if_none_exist)
    subject = resource.get("subject")
    device = resource.get("device")
    try:
        if resource.get("status") not in _RESULT_STATUSES:
            raise _malformed("Observation.status must be final, amended, corrected or preliminary")
        measure = _measure_name(resource.get("code"))
        value, unit = _value(resource, measure)
        raw = RawReading(message_id, measure, _effective(resource), value, unit)
    except InvalidReading as exc:
        return FhirObservation(Incoming(payload, message_id, error=exc), subject, device)
    return FhirObservation(Incoming(payload, message_id, reading=raw), subject, device)
