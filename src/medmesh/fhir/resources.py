"""Rendering stored records as FHIR R4 resources (plain dicts, serialised with orjson)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from medmesh.domain.reading import MeasuredValue
from medmesh.domain.registry import Device, Patient, PostalAddress
from medmesh.domain.vocabulary import (
    LOINC,
    UCUM,
    Category,
    category_of,
    measure_by_code,
    quantity_by_code,
)
from medmesh.store.device_status import DeviceStatus
from medmesh.store.observations import StoredObservation

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
_CATEGORY_DISPLAY = {
    Category.VITAL_SIGNS: "Vital Signs",
    Category.LABORATORY: "Laboratory",
    Category.ACTIVITY: "Activity",
}
# FHIR R4 vital-signs profiles each measure conforms to (http://hl7.org/fhir/R4/observation-vitalsigns.html).
_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
_PROFILES = {
    "8867-4": "heartrate",
    "9279-1": "resprate",
    "2708-6": "oxygensat",
    "8310-5": "bodytemp",
    "85354-9": "bp",
    "29463-7": "bodyweight",
}
# US Core (6.1.0) profiles the same measures meet: the vital signs and the measure's own.
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
US_CORE_PATIENT = US_CORE + "us-core-patient"
_US_CORE_PROFILES = {
    "8867-4": "us-core-heart-rate",
    "9279-1": "us-core-respiratory-rate",
    "2708-6": "us-core-pulse-oximetry",
    "8310-5": "us-core-body-temperature",
    "85354-9": "us-core-blood-pressure",
    "29463-7": "us-core-body-weight",
}
_UNIT_DISPLAY = {"/min": "/min", "Cel": "°C", "mm[Hg]": "mmHg", "{steps}": "steps"}


@functools.lru_cache(maxsize=4096)  # a batch's readings share their received time
def instant(moment: datetime) -> str:
    """An ISO 8601 instant in UTC with a Z, as FHIR dateTime/instant want it."""
    return moment.isoformat().replace("+00:00", "Z")


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _quantity_of(value: float, unit: str) -> dict[str, Any]:
    return {
        "value": _number(value),
        "unit": _UNIT_DISPLAY.get(unit, unit),
        "system": UCUM,
        "code": unit,
    }


def _quantity(value: MeasuredValue) -> dict[str, Any]:
    return _quantity_of(value.value, value.unit)


# The parts below depend only on the code, so each is built once and shared between resources
# (a 24-hour search renders ~1,500 Observations). Shared means read-only: never mutate them.
@functools.cache
def _concept(code: str) -> dict[str, Any]:
    measure = measure_by_code(code)
    quantity = quantity_by_code(code)
    display = measure.display if measure is not None else quantity.display if quantity else code
    codings = [{"system": LOINC, "code": code, "display": display}]
    if measure is not None:
        codings.extend({"system": LOINC, "code": c} for c in measure.also_codes)
    return {"coding": codings, "text": display}


@functools.cache
def _category(category: Category) -> list[dict[str, Any]]:
    coding = {"system": CATEGORY_SYSTEM, "code": category.value}
    return [{"coding": [{**coding, "display": _CATEGORY_DISPLAY[category]}]}]


@functools.cache
def _meta(code: str) -> dict[str, Any] | None:
    profile = _PROFILES.get(code)
    if profile is None:
        return None
    return {
        "profile": [
            _PROFILE + "vitalsigns",
            _PROFILE + profile,
            US_CORE + "us-core-vital-signs",
            US_CORE + _US_CORE_PROFILES[code],
        ]
    }


def observation_profiles() -> list[str]:
    """Every profile an Observation of medmesh may claim (CapabilityStatement.supportedProfile)."""
    found: list[str] = []
    for code in _PROFILES:
        meta = _meta(code)
        found.extend(p for p in (meta or {}).get("profile", []) if p not in found)
    return found


_Head = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]


@functools.cache
def _observation_head(code: str) -> _Head:
    """An Observation's category, code and meta for `code`: the parts no row changes."""
    return _category(category_of(code)), _concept(code), _meta(code)


def _observation_base(
    ident: str, patient_id: str, device_id: str, code: str, effective: str, issued: str
) -> dict[str, Any]:
    category, concept, meta = _observation_head(code)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": category,
        "code": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
        "issued": issued,
        "device": {"reference": f"Device/{device_id}"},
    }
    if meta is not None:
        resource["meta"] = meta
    return resource


def simple_observation(
    ident: str,
    patient_id: str,
    device_id: str,
    code: str,
    effective: datetime,
    issued: datetime,
    value: float,
    unit: str,
) -> dict[str, Any]:
    """The Observation of a stored row holding one value and no laboratory findings, rendered
    straight from the row's columns (the search's path: no StoredObservation in between).
    `_observation_base` written out: a 24-hour search renders 1,440 of these.

    Its times stay datetimes, for `FhirResponse` to write (as `instant` would, natively): the
    resource is for that response only. Written, it is the JSON `observation` gives for the
    row (tests/integration/test_observation_rows.py)."""
    category, concept, meta = _observation_head(code)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": category,
        "code": concept,
        "subject": _reference("Patient/", patient_id),
        "effectiveDateTime": effective,
        "issued": issued,
        "device": _reference("Device/", device_id),
    }
    if meta is not None:
        resource["meta"] = meta
    resource["valueQuantity"] = _shared_quantity(value, unit)
    return resource


# A page's rows share their patient, their device and, for whole-number vital signs, their
# value: shared read-only parts, as the code's above, so a 24-hour search allocates two
# containers a row instead of five (fewer objects for the collector to walk while it renders).
@functools.lru_cache(maxsize=4096)
def _reference(prefix: str, ident: str) -> dict[str, str]:
    return {"reference": prefix + ident}


_shared_quantity = functools.lru_cache(maxsize=4096)(_quantity_of)


def observation(obs: StoredObservation) -> dict[str, Any]:
    measure = measure_by_code(obs.code)
    resource = _observation_base(
        obs.id,
        obs.patient_id,
        obs.device_id,
        obs.code,
        instant(obs.effective),
        instant(obs.received_at),
    )
    if measure is not None and measure.is_panel:
        order = {c.code: i for i, c in enumerate(measure.components)}
        resource["component"] = [
            {"code": _concept(v.code), "valueQuantity": _quantity(v)}
            for v in sorted(obs.values, key=lambda v: order.get(v.code, len(order)))
        ]
    else:
        resource["valueQuantity"] = _quantity(obs.values[0])
    if obs.lab is not None:
        _lab_findings(resource, obs)
    return resource


_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _lab_findings(resource: dict[str, Any], obs: StoredObservation) -> None:
    """A laboratory's test name (OBX-3), status (OBX-11), comparator (OBX-5 SN), reference range
    (OBX-7) and interpretation flag (OBX-8)."""
    assert obs.lab is not None
    unit = obs.values[0].unit if obs.values else None
    resource["status"] = obs.lab.status
    if obs.lab.display and measure_by_code(obs.code) is None:
        # The vocabulary has no name for this test: the laboratory's own (a new dict: the
        # cached concept is shared).
        display = obs.lab.display
        resource["code"] = {
            "coding": [{"system": LOINC, "code": obs.code, "display": display}],
            "text": display,
        }
    if obs.lab.comparator and "valueQuantity" in resource:
        resource["valueQuantity"] = {**resource["valueQuantity"], "comparator": obs.lab.comparator}
    if obs.lab.reference_range:
        reference: dict[str, Any] = {"text": obs.lab.reference_range}
        for name, bound in (("low", obs.lab.low), ("high", obs.lab.high)):
            if bound is not None and unit is not None:
                reference[name] = {"value": _number(bound), "system": UCUM, "code": unit}
        resource["referenceRange"] = [reference]
    if obs.lab.interpretation:
        code = obs.lab.interpretation
        resource["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": code}]}]


def patient(record: Patient) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": record.id,
        "identifier": [
            {"system": record.identifier_system, "value": record.identifier_value},
            *({"system": s, "value": v} for s, v in record.other_identifiers),
        ],
        "name": [{"family": record.family, "given": [record.given]}],
    }
    if record.gender is not None:
        resource["gender"] = record.gender
        # US Core Patient requires a gender; the identifier and name it requires are always here.
        resource["meta"] = {"profile": [US_CORE_PATIENT]}
    if record.birth_date is not None:
        resource["birthDate"] = record.birth_date.isoformat()
    if record.phone is not None:
        resource["telecom"] = [{"system": "phone", "value": record.phone, "use": "home"}]
    if record.address is not None:
        resource["address"] = [_address(record.address)]
    return resource


def _address(address: PostalAddress) -> dict[str, Any]:
    parts: dict[str, Any] = {"use": "home"}
    if address.lines:
        parts["line"] = list(address.lines)
    for name, value in (
        ("city", address.city),
        ("state", address.state),
        ("postalCode", address.postal_code),
        ("country", address.country),
    ):
        if value:
            parts[name] = value
    return parts


# Device.identifier: the serial number the manufacturer gave it (Device?identifier= finds it).
DEVICE_SERIAL_SYSTEM = "urn:medmesh:device-serial"
LAST_SEEN_EXTENSION = "https://medmesh.dev/fhir/StructureDefinition/device-last-seen"


def _device_status(resource: dict[str, Any], status: DeviceStatus) -> None:
    """Last seen as an extension (R4 Device has no such element); battery and connectivity
    as Device.property; firmware as Device.version."""
    resource["extension"] = [
        {"url": LAST_SEEN_EXTENSION, "valueDateTime": instant(status.last_seen)}
    ]
    properties: list[dict[str, Any]] = []
    if status.battery_percent is not None:
        properties.append(
            {
                "type": {"text": "battery-level"},
                "valueQuantity": [
                    {
                        "value": _number(status.battery_percent),
                        "unit": "%",
                        "system": UCUM,
                        "code": "%",
                    }
                ],
            }
        )
    if status.online is not None:
        properties.append(
            {
                "type": {"text": "connectivity"},
                "valueCode": [{"text": "online" if status.online else "offline"}],
            }
        )
    if properties:
        resource["property"] = properties
    if status.firmware:
        resource["version"] = [{"type": {"text": "firmware"}, "value": status.firmware}]


def device(
    record: Device, patient_id: str | None, status: DeviceStatus | None = None
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Device", "id": record.id}
    if record.serial_number:
        resource["identifier"] = [{"system": DEVICE_SERIAL_SYSTEM, "value": record.serial_number}]
    resource |= {
        "status": "active",
        "deviceName": [{"name": record.display_name, "type": "user-friendly-name"}],
    }
    if record.type:
        system, _, code = record.type.rpartition("|")
        resource["type"] = {"coding": [{"system": system, "code": code}]}
    if record.manufacturer:
        resource["manufacturer"] = record.manufacturer
    if record.model:
        resource["modelNumber"] = record.model
    if record.serial_number:
        resource["serialNumber"] = record.serial_number
    if patient_id is not None:
        resource["patient"] = {"reference": f"Patient/{patient_id}"}
    if status is not None:
        _device_status(resource, status)
    return resource
