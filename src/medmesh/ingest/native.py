"""The native JSON reading format.

    {"readings": [
      {"id": "m-1", "type": "heart-rate", "time": "2026-11-25T08:00:00Z",
       "value": 72, "unit": "/min"},
      {"id": "m-2", "type": "blood-pressure", "time": "2026-11-25T08:00:00Z",
       "value": {"systolic": 128, "diastolic": 82}, "unit": "mm[Hg]"}
    ]}

`type` is a medmesh key (docs/readings.md) or a LOINC code; `id` is the device's message id,
unique per device, which makes resending safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import MAX_MESSAGE_ID_LENGTH as MAX_MESSAGE_ID_LENGTH
from medmesh.domain.reading import RawReading, is_valid_message_id
from medmesh.domain.timestamps import TimestampError, parse_rfc3339
from medmesh.ingest.incoming import Incoming


class MalformedBody(InvalidReading):
    """The body as a whole is not a readings document."""

    def __init__(self, message: str) -> None:
        super().__init__(RejectReason.MALFORMED_BODY, message)


def _malformed(message: str) -> InvalidReading:
    return InvalidReading(RejectReason.MALFORMED, message)


def _text(item: dict[str, Any], field: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _malformed(f"field {field!r} must be a non-empty string")
    return value


def _time(item: dict[str, Any]) -> datetime:
    try:
        return parse_rfc3339(_text(item, "time"))
    except TimestampError as exc:
        raise _malformed(_TIME_ERRORS[exc.problem]) from None


_TIME_ERRORS = {
    "format": "field 'time' must be an RFC 3339 date-time, e.g. 2026-11-25T08:00:00Z",
    "offset": "field 'time' must carry a UTC offset, e.g. 'Z'",
    "calendar": "field 'time' is not a valid calendar date and time",
}


def _value(item: dict[str, Any]) -> float | dict[str, float]:
    value = item.get("value")
    if isinstance(value, bool) or value is None:
        raise _malformed("field 'value' must be a number or an object of numbers")
    if isinstance(value, int | float):
        return value
    if isinstance(value, dict) and value:
        parts: dict[str, float] = {}
        for key, part in value.items():
            if isinstance(part, bool) or not isinstance(part, int | float):
                raise _malformed("field 'value' must be a number or an object of numbers")
            parts[key] = part
        return parts
    raise _malformed("field 'value' must be a number or an object of numbers")


def parse_item(item: Any) -> RawReading:
    """One reading of the native format, or InvalidReading(MALFORMED) naming the bad field."""
    if not isinstance(item, dict):
        raise _malformed("each reading must be a JSON object")
    message_id = _text(item, "id")
    if not is_valid_message_id(message_id):
        raise _malformed(f"field 'id' must be 1 to {MAX_MESSAGE_ID_LENGTH} printable characters")
    return RawReading(
        message_id=message_id,
        measure=_text(item, "type"),
        effective=_time(item),
        value=_value(item),
        unit=_text(item, "unit"),
    )


BODY_FIELDS = frozenset({"readings", "device"})
READING_FIELDS = frozenset({"id", "type", "time", "value", "unit"})
MAX_IGNORED_FIELDS = 20
_MAX_FIELD_NAME = 64


def ignored_fields(body: bytes) -> list[str]:
    """The fields of a native body that medmesh does not read, so a device vendor can see
    them in the receipt: `patient` for the body, `readings[].note` for a reading's (each
    name once, at most 20, names cut to 64 characters). Only names, never values."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    found = {str(key)[:_MAX_FIELD_NAME]: None for key in document if key not in BODY_FIELDS}
    readings = document.get("readings")
    for item in readings if isinstance(readings, list) else ():
        if len(found) >= MAX_IGNORED_FIELDS:
            break
        if isinstance(item, dict):
            for key in item:
                if key not in READING_FIELDS:
                    found.setdefault(f"readings[].{str(key)[:_MAX_FIELD_NAME]}", None)
    return sorted(found)[:MAX_IGNORED_FIELDS]


def _message_id(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("id")
        if isinstance(value, str) and is_valid_message_id(value):
            return value
    return None


def parse_body(body: bytes, max_readings: int, device_id: str | None = None) -> list[Incoming]:
    """Split a native JSON body into one `Incoming` per reading; raise MalformedBody if it is
    not a readings document at all.

    The optional top-level `device` names the sender; when given it must be `device_id`, the
    device the credential or topic belongs to.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedBody("the body is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
        raise MalformedBody("the body must be an object with a 'readings' array")
    claimed = document.get("device")
    if claimed is not None and device_id is not None and claimed != device_id:
        raise InvalidReading(
            RejectReason.DEVICE_MISMATCH, "the body names a different device than the sender"
        )
    items: list[Any] = document["readings"]
    if len(items) > max_readings:
        raise MalformedBody(f"a batch holds at most {max_readings} readings")
    incoming = []
    for item in items:
        payload = orjson.dumps(item).decode()
        reading = _well_formed(item)
        if reading is not None:
            incoming.append(Incoming(payload, reading.message_id, reading=reading))
            continue
        try:
            incoming.append(Incoming(payload, _message_id(item), reading=parse_item(item)))
        except InvalidReading as exc:
            incoming.append(Incoming(payload, _message_id(item), error=exc))
    return incoming


def _well_formed(item: Any) -> RawReading | None:
    """The reading of an item with a plain number for its value and every field well formed
    (nearly every reading), checked in one pass; None for anything else, which `parse_item`
    then reads field by field and refuses with the first bad field's reason. The same
    `RawReading` as `parse_item` gives (tests/unit/test_ingest_fast_paths.py)."""
    if item.__class__ is not dict:
        return None
    message_id = item.get("id")
    measure = item.get("type")
    time = item.get("time")
    value = item.get("value")
    unit = item.get("unit")
    if not (
        message_id.__class__ is str
        and measure.__class__ is str
        and time.__class__ is str
        and unit.__class__ is str
        and (value.__class__ is int or value.__class__ is float)
        and measure.strip()
        and unit.strip()
        and is_valid_message_id(message_id)
        and message_id.strip()
    ):
        return None
    try:
        effective = parse_rfc3339(time)
    except TimestampError:
        return None
    return RawReading(message_id, measure, effective, value, unit)
