"""Events: small, serialisable facts. They name what changed (ids, codes, counts), and carry
values only where a consumer must show them at once (an alert's title); consumers that need
more read it through the store, where access is checked."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

READINGS = "readings"  # data: {"count": n, "codes": [...], "devices": [...], "observations": [ids]}
ALERT = "alert"  # data: the alert as the JSON API renders it
DEVICE = "device"  # data: {"device_id": ..., "online": ..., "battery_percent": ...}
# data: {"refill_request_id": ..., "medication_id": ..., "status": ..., "renewal_id"?: ...}
REFILL = "refill"
# data: {"appointment_id": ..., "status": ..., "clinician_id": ..., "start": ...}
APPOINTMENT = "appointment"
MESSAGE = "message"  # data: {"thread_id": ..., "message_id": ..., "side": ...}; never the text


def event_id(at: datetime | None = None) -> str:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Event ids
    are ordered by time, so a stream client resuming after the last event it saw
    (`Last-Event-ID`) says from when (`event_time`). Python 3.14's `uuid.uuid7` does the same."""
    millis = int((at or datetime.now(UTC)).timestamp() * 1000) & (1 << 48) - 1
    random = int.from_bytes(os.urandom(10), "big")
    value = millis << 80 | 0x7 << 76 | (random >> 62 & 0xFFF) << 64 | 0b10 << 62
    return str(uuid.UUID(int=value | random & (1 << 62) - 1))


def event_time(identifier: str) -> datetime | None:
    """When the event `identifier` names happened, if it is a version 7 UUID; else None."""
    try:
        parsed = uuid.UUID(identifier)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    patient_id: str | None
    data: dict[str, Any]
    id: str = field(default_factory=event_id)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "patient_id": self.patient_id,
                "at": self.at.isoformat(),
                "data": self.data,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        doc = orjson.loads(raw)
        return cls(
            kind=doc["kind"],
            patient_id=doc["patient_id"],
            data=doc["data"],
            id=doc["id"],
            at=datetime.fromisoformat(doc["at"]),
        )
