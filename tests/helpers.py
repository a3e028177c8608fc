"""Small builders shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TIME = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def reading(
    message_id: str,
    kind: str = "heart-rate",
    value: Any = 72,
    unit: str = "/min",
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": kind,
        "time": stamp(at or BASE_TIME),
        "value": value,
        "unit": unit,
    }


def minute_series(
    count: int, start: datetime = BASE_TIME, prefix: str = "m"
) -> list[dict[str, Any]]:
    """`count` heart-rate readings one minute apart."""
    return [
        reading(f"{prefix}-{i}", value=60 + i % 40, at=start + timedelta(minutes=i))
        for i in range(count)
    ]
