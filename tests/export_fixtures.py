"""Fixtures for the export tests: the app with its export runner reachable, two patients
with readings and alerts, and a bounded wait for a bulk export to finish."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from medmesh import provisioning
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.store.schema import patients
from medmesh.store.users import Organizations
from tests.conftest import ASSIGNED_SINCE, World, make_world
from tests.helpers import BASE_TIME, minute_series

INGEST = "/ingest/v1/readings"
A_READINGS = 30
B_READINGS = 20


@dataclass(frozen=True, slots=True)
class Clinic:
    """Patient A (the `world`) and patient B, each with a device, readings and one alert."""

    a: World
    b_patient_id: str
    b_device_id: str
    b_device_headers: dict[str, str]
    # The organisation's own backend service (system/*.rs): it may export both records.
    headers: dict[str, str]


@dataclass
class ExportApp:
    app: FastAPI
    http: httpx.AsyncClient


@pytest.fixture
async def export_app(database_url: str) -> AsyncIterator[ExportApp]:
    """The real app in-process with small export files (7 resources), so files split."""
    settings = Settings(database_url=database_url, auto_migrate=False, export_file_resources=7)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield ExportApp(app, http)


async def ingest(http: httpx.AsyncClient, headers: dict[str, str], readings: list[Any]) -> None:
    response = await http.post(INGEST, json={"readings": readings}, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(readings)


async def add_alert(database: Database, patient_id: str, opened: datetime) -> str:
    alert_id = str(uuid.uuid4())
    alert = Alert(
        id=alert_id,
        patient_id=patient_id,
        rule="spo2-low",
        dedupe_key=f"spo2-low:{patient_id}",
        severity=Severity.URGENT,
        status=AlertStatus.OPEN,
        title="SpO2 low",
        detail="below 90 % for 5 minutes",
        device_id=None,
        observation_id=None,
        opened_at=opened,
        last_triggered_at=opened,
        trigger_count=1,
    )
    async with database.write() as conn:
        await Alerts(conn).add(alert)
    return alert_id


async def make_clinic(database: Database, http: httpx.AsyncClient) -> Clinic:
    a = await make_world(database)
    b = await provisioning.create_patient(database, family="Roe", given="Rick", identifier="MRN-2")
    b_device = await provisioning.register_device(database, display_name="Oximeter")
    await provisioning.assign_device(database, b_device.device_id, b.id, ASSIGNED_SINCE)
    b_headers = {"Authorization": f"Bearer {b_device.secret}"}
    await ingest(http, a.device_headers, minute_series(A_READINGS, prefix="a"))
    await ingest(http, b_headers, minute_series(B_READINGS, prefix="b"))
    await add_alert(database, a.patient_id, BASE_TIME + timedelta(minutes=5))
    await add_alert(database, b.id, BASE_TIME + timedelta(minutes=6))
    service = await provisioning.issue_service_token(
        database, name="clinic EHR", scopes="system/*.rs"
    )
    return Clinic(a, b.id, b_device.device_id, b_headers, {"Authorization": f"Bearer {service}"})


async def move_to_organization(database: Database, organization_id: str, patient_id: str) -> None:
    async with database.write() as conn:
        await Organizations(conn).add(organization_id, "North clinic")
        moved = update(patients).where(patients.c.id == patient_id)
        await conn.execute(moved.values(organization_id=organization_id))


async def other_token(database: Database) -> dict[str, str]:
    token = await provisioning.issue_service_token(
        database, name="someone else", scopes="system/*.rs"
    )
    return {"Authorization": f"Bearer {token}"}


async def kick_off(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], **params: str
) -> str:
    """Start an export; returns its status URL."""
    response = await http.get(path, params=params, headers={**headers, "Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    return response.headers["content-location"]


async def wait_for_manifest(
    http: httpx.AsyncClient, status_url: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Poll the status URL until the job completes (it runs in this process): at most 300
    polls 20 ms apart, and every 202 on the way must carry X-Progress and Retry-After."""
    for _ in range(300):
        response = await http.get(status_url, headers=headers)
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json")
            manifest: dict[str, Any] = response.json()
            return manifest
        assert response.status_code == 202, response.text
        assert response.headers["x-progress"]
        assert int(response.headers["retry-after"]) > 0
        await asyncio.sleep(0.02)
    raise AssertionError("the export did not complete within 300 polls")


def now() -> datetime:
    return datetime.now(UTC)
