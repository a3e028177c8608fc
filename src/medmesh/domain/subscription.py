"""What a FHIR Subscription may ask of medmesh: the criteria it can match and the endpoints it
may notify. Pure rules, shared by the API that accepts subscriptions and the webhook sender."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from medmesh.domain.vocabulary import LOINC, measure_by_code

SUPPORTED_CRITERIA = (
    "Observation?patient=<id> (optionally with &code=<system|code>), Flag?patient=<id>, Flag, "
    "MedicationRequest?patient=<id>, MedicationRequest, Communication?patient=<id> "
    "or Communication"
)
MAX_ENDPOINT_LENGTH = 2000
_PARAMETERS = {
    "Observation": {"patient", "code"},
    "Flag": {"patient"},
    # Care resources: notifications name the changed resource's id only (docs/care.md).
    "MedicationRequest": {"patient"},
    "Communication": {"patient"},
}
ResourceType = Literal["Observation", "Flag", "MedicationRequest", "Communication"]


class InvalidSubscription(ValueError):
    """Criteria or an endpoint medmesh cannot serve; the message says what it accepts and
    never repeats the value given."""


@dataclass(frozen=True, slots=True)
class Criteria:
    """Parsed criteria: new Observations (of `codes`, if any), alerts (as Flag), approved
    renewals (MedicationRequest) or secure messages (Communication), for one patient or,
    except for Observation, for every patient the subscriber may see."""

    resource_type: ResourceType
    patient_id: str | None
    codes: tuple[str, ...] = ()  # stored (primary) LOINC codes; empty means any


def parse_criteria(text: str) -> Criteria:
    """`Observation?patient=<id>[&code=<system|code>[,…]]`, `Flag?patient=<id>` or `Flag`."""
    resource_type, _, query = text.strip().partition("?")
    if resource_type not in _PARAMETERS:
        raise InvalidSubscription(f"unsupported criteria; supported: {SUPPORTED_CRITERIA}")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidSubscription("criteria is not a valid query string") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS[resource_type]:
            raise InvalidSubscription(
                f"unsupported criteria parameter for {resource_type}; "
                f"supported: {SUPPORTED_CRITERIA}"
            )
        if name in params:
            raise InvalidSubscription("each criteria parameter may be given once")
        params[name] = value
    patient = params.get("patient")
    if resource_type == "Observation" and patient is None:
        raise InvalidSubscription(f"Observation criteria need a patient; {SUPPORTED_CRITERIA}")
    codes = _codes(params["code"]) if "code" in params else ()
    patient_id = _patient_id(patient) if patient is not None else None
    kind: ResourceType = resource_type  # type: ignore[assignment]  # checked above
    return Criteria(kind, patient_id, codes)


def _patient_id(reference: str) -> str:
    """`Patient/123` or `123` → `123`."""
    kind, slash, ident = reference.rpartition("/")
    if (slash and kind != "Patient") or not ident:
        raise InvalidSubscription("patient must be a Patient id or Patient/<id>")
    return ident


def _codes(tokens: str) -> tuple[str, ...]:
    codes: list[str] = []
    for token in tokens.split(","):
        system, sep, code = token.rpartition("|")
        if sep and system not in ("", LOINC):
            raise InvalidSubscription(f"code: only the LOINC system ({LOINC}) is supported")
        measure = measure_by_code(code)
        if measure is None:
            raise InvalidSubscription("code names no measure medmesh stores (docs/readings.md)")
        codes.append(measure.code)
    return tuple(dict.fromkeys(codes))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str) -> str:
    """The URL, if notifications may be sent there: https://, or http:// to a loopback host
    (development only; nothing leaves the machine in clear)."""
    if len(url) > MAX_ENDPOINT_LENGTH:
        raise InvalidSubscription(f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise InvalidSubscription("endpoint is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidSubscription("endpoint must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidSubscription("endpoint must not carry credentials; notifications are signed")
    if parts.scheme == "http" and not is_loopback(host):
        raise InvalidSubscription(
            "endpoint must be https:// (http:// is accepted only for loopback hosts, "
            "for development)"
        )
    return url
