"""Events: small, serialisable facts. They name what changed (ids, codes, counts), and carry
values only where a consumer must show them at once (an alert's title); consumers that need
more read it through the store, where access is checked."""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    patient_id: str | None
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
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
