"""Device status messages: battery, firmware version, connectivity.

    {"online": true, "battery": 87, "firmware": "2.4.1"}

Every field is optional. A device sets its MQTT last will to `{"online": false}` (retained) on
its status topic, so the broker reports it offline when its connection drops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from medmesh.domain.errors import InvalidReading, RejectReason


@dataclass(frozen=True, slots=True)
class StatusReport:
    online: bool | None
    battery_percent: float | None
    firmware: str | None


def _malformed(message: str) -> InvalidReading:
    return InvalidReading(RejectReason.MALFORMED, message)


def parse_status(body: bytes) -> StatusReport:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _malformed("the status is not valid JSON") from None
    if not isinstance(document, dict):
        raise _malformed("the status must be a JSON object")
    online = document.get("online")
    if online is not None and not isinstance(online, bool):
        raise _malformed("'online' must be true or false")
    battery = document.get("battery")
    if battery is not None:
        if isinstance(battery, bool) or not isinstance(battery, int | float):
            raise _malformed("'battery' must be a percentage")
        if not math.isfinite(battery) or not 0 <= battery <= 100:
            raise _malformed("'battery' must be between 0 and 100")
    firmware = document.get("firmware")
    if firmware is not None and (
        not isinstance(firmware, str) or not 0 < len(firmware) <= 64 or not firmware.isprintable()
    ):
        raise _malformed("'firmware' must be 1 to 64 printable characters")
    return StatusReport(online, None if battery is None else float(battery), firmware)
