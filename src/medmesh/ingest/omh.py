"""Open mHealth data points (https://www.openmhealth.org/, IEEE 1752.1) as readings.

A body is one data point or a JSON array of them; each becomes one reading. docs/formats.md
lists the schemas and how their units and time frames map to medmesh.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import orjson

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import RawReading, is_valid_message_id
from medmesh.domain.timestamps import TimestampError, parse_rfc3339
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import MAX_MESSAGE_ID_LENGTH, MalformedBody

OMH = "omh"  # the format name, and the schema namespace it reads

# Schema name -> (medmesh measure key, body property holding its unit-value).
_SINGLE_VALUE_SCHEMAS: dict[str, tuple[str, str]] = {
    "heart-rate": ("heart-rate", "heart_rate"),
    "respiratory-rate": ("respiratory-rate", "respiratory_rate"),
    "oxygen-saturation": ("oxygen-saturation", "oxygen_saturation"),
    "body-temperature": ("body-temperature", "body_temperature"),
    "body-weight": ("body-weight", "body_weight"),
    "blood-glucose": ("blood-glucose", "blood_glucose"),
    "step-count": ("steps", "step_count"),
}
_BLOOD_PRESSURE_PARTS = (
    ("systolic", "systolic_blood_pressure"),
    ("diastolic", "diastolic_blood_pressure"),
)

# The unit strings the OMH schemas allow (their "common synonyms", not UCUM), as UCUM codes.
# Anything else passes through unchanged; the pipeline refuses what it cannot convert.
OMH_UNITS: dict[str, str] = {
    "beats/min": "/min",
    "breaths/min": "/min",
    "mmHg": "mm[Hg]",
    "mg/dL": "mg/dL",
    "mmol/L": "mmol/L",
    "%": "%",
    "C": "Cel",
    "F": "[degF]",
    "K": "K",
    "kg": "kg",
    "g": "g",
    "mg": "mg",
    "lb": "[lb_av]",
    "oz": "[oz_av]",
    "steps": "{steps}",
}
_KELVIN_AT_ZERO_CELSIUS = 273.15

# specimen_source (blood-glucose 3.x/4.x) -> measure. Other sources (urine, sweat, …) have no
# medmesh code. The deprecated blood_specimen_type (1.x) only says which part of the blood.
_GLUCOSE_BY_SPECIMEN = {"capillary blood": "blood-glucose", "interstitial fluid": "cgm-glucose"}
_GLUCOSE_BY_BLOOD_SPECIMEN = {"whole blood": "blood-glucose"}

# Fixed-length duration units of the IEEE duration-unit-value schema, in seconds ("Mo" and
# "yr" vary in length and are refused).
_DURATION_SECONDS: dict[str, float] = {
    "ps": 1e-12,
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "sec": 1,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "wk": 604800,
}


def _malformed(message: str) -> InvalidReading:
    return InvalidReading(RejectReason.MALFORMED, message)


def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise _malformed(f"field '{where}' must be an object")
    return value


def _text(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _malformed(f"field '{where}' must be a non-empty string")
    return value


def _number(parent: dict[str, Any], key: str, where: str) -> float:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(f"field '{where}' must be a finite number")
    return value


def _date_time(parent: dict[str, Any], key: str, where: str) -> datetime:
    text = _text(parent, key, where)
    try:
        # IEEE 1752.1 date-time: "If a timezone is not included, the timezone is assumed to
        # be UTC."
        return parse_rfc3339(text, assume_utc=True)
    except TimestampError:
        raise _malformed(f"field '{where}' must be an RFC 3339 date-time") from None


def _message_id(header: Any) -> str | None:
    """header.uuid (IEEE 1752.1) or header.id (OMH 1.x), when usable."""
    if isinstance(header, dict):
        for key in ("uuid", "id"):
            value = header.get(key)
            if isinstance(value, str) and value.strip() and is_valid_message_id(value):
                return value
    return None


def _effective(body: dict[str, Any]) -> datetime:
    """The reading's time: the date_time, or the end of the time_interval.

    A value measured over an interval (an average heart rate, a step count) is known at its
    end; when the interval gives only a start and a fixed-length duration, the end is computed.
    """
    frame = _object(body, "effective_time_frame", "body.effective_time_frame")
    if "date_time" in frame:
        return _date_time(frame, "date_time", "body.effective_time_frame.date_time")
    where = "body.effective_time_frame.time_interval"
    interval = frame.get("time_interval")
    if not isinstance(interval, dict):
        raise _malformed(
            "field 'body.effective_time_frame' must hold a date_time or a time_interval"
        )
    if "end_date_time" in interval:
        return _date_time(interval, "end_date_time", f"{where}.end_date_time")
    if "start_date_time" in interval:
        start = _date_time(interval, "start_date_time", f"{where}.start_date_time")
        duration = _object(interval, "duration", f"{where}.duration")
        length = _number(duration, "value", f"{where}.duration.value")
        seconds = _DURATION_SECONDS.get(str(duration.get("unit")))
        if seconds is None or length < 0:
            raise _malformed(
                f"field '{where}.duration' must be a non-negative duration in a fixed-length unit"
            )
        try:
            return start + timedelta(seconds=length * seconds)
        except OverflowError:
            raise _malformed(f"field '{where}.duration' is out of range") from None
    raise _malformed(f"field '{where}' must hold an end_date_time, or a start and a duration")


def _unit_value(body: dict[str, Any], key: str) -> tuple[float, str]:
    """A unit-value of the body, in UCUM."""
    where = f"body.{key}"
    part = _object(body, key, where)
    value = _number(part, "value", f"{where}.value")
    unit = OMH_UNITS.get(_text(part, "unit", f"{where}.unit"), part["unit"])
    if unit == "K":  # medmesh's unit table has no kelvin; body temperature is stored in Cel
        return value - _KELVIN_AT_ZERO_CELSIUS, "Cel"
    return value, unit


def _glucose_measure(body: dict[str, Any]) -> str:
    source = body.get("specimen_source")
    if source is not None:
        measure = _GLUCOSE_BY_SPECIMEN.get(source) if isinstance(source, str) else None
    elif "blood_specimen_type" in body:
        kind = body["blood_specimen_type"]
        measure = _GLUCOSE_BY_BLOOD_SPECIMEN.get(kind) if isinstance(kind, str) else None
    else:
        return "blood-glucose"
    if measure is None:
        raise InvalidReading(
            RejectReason.UNKNOWN_CODE, "glucose of this specimen source has no medmesh code"
        )
    return measure


def _step_count(body: dict[str, Any]) -> tuple[float, str]:
    if isinstance(body.get("step_count"), dict):  # 2.x and later: a unit-value
        return _unit_value(body, "step_count")
    return _number(body, "step_count", "body.step_count"), "{steps}"  # 1.x: a bare number


def parse_data_point(item: Any) -> RawReading:
    """One data point, or InvalidReading: MALFORMED naming the field, UNKNOWN_CODE for a
    schema medmesh has no measure for."""
    if not isinstance(item, dict):
        raise _malformed("each data point must be a JSON object")
    header = _object(item, "header", "header")
    message_id = _message_id(header)
    if message_id is None:
        raise _malformed(
            f"field 'header.uuid' (or 'header.id') must be a string of 1–{MAX_MESSAGE_ID_LENGTH}"
            " characters"
        )
    schema_id = _object(header, "schema_id", "header.schema_id")
    namespace = _text(schema_id, "namespace", "header.schema_id.namespace")
    name = _text(schema_id, "name", "header.schema_id.name")
    if namespace != OMH or (name not in _SINGLE_VALUE_SCHEMAS and name != "blood-pressure"):
        raise InvalidReading(RejectReason.UNKNOWN_CODE, "schema is not one medmesh reads")
    body = _object(item, "body", "body")
    value: float | dict[str, float]
    if name == "blood-pressure":
        parts = {key: _unit_value(body, field) for key, field in _BLOOD_PRESSURE_PARTS}
        units = {unit for _, unit in parts.values()}
        if len(units) != 1:
            raise _malformed("systolic and diastolic blood pressure must have the same unit")
        value = {key: number for key, (number, _) in parts.items()}
        (unit,) = units
        measure = "blood-pressure"
    else:
        measure, field = _SINGLE_VALUE_SCHEMAS[name]
        if name == "step-count":
            value, unit = _step_count(body)
        else:
            value, unit = _unit_value(body, field)
        if name == "blood-glucose":
            measure = _glucose_measure(body)
    return RawReading(
        message_id=message_id,
        measure=measure,
        effective=_effective(body),
        value=value,
        unit=unit,
    )


def parse_omh(body: bytes, device_id: str, max_readings: int) -> list[Incoming]:
    """Split a body of Open mHealth data points into one `Incoming` each; raise MalformedBody
    if it is neither a data point nor an array of them.

    `device_id` is not checked: a data point names its user and source app, never the device.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedBody("the body is not valid JSON") from None
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise MalformedBody("the body must be a data point or an array of data points")
    if len(items) > max_readings:
        raise MalformedBody(f"a batch holds at most {max_readings} readings")
    incoming = []
    for item in items:
        payload = orjson.dumps(item).decode()
        message_id = _message_id(item.get("header")) if isinstance(item, dict) else None
        try:
            incoming.append(Incoming(payload, message_id, reading=parse_data_point(item)))
        except InvalidReading as exc:
            incoming.append(Incoming(payload, message_id, error=exc))
    return incoming
