"""Small builders shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

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


async def after_commit_settled(app: FastAPI) -> None:
    """Wait until an in-process app has run its after-commit work (alert rules, events) on
    every reading it acknowledged: the rules judge readings just after the acknowledgement
    (ingest/after_commit.py)."""
    await app.state.services.pipeline.after_commit.settled()


class AppClient(httpx.AsyncClient):
    """An HTTP client of an in-process app, which can also wait for the app's after-commit
    work (`settled`)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://test")
        self.app = app

    async def settled(self) -> None:
        await after_commit_settled(self.app)
