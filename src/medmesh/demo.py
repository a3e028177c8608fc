"""`medmesh demo`: the platform on the embedded default with simulated patients streaming in."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from sqlalchemy.engine import make_url

from medmesh import admin
from medmesh.access.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.sim.http_device import HttpDevice
from medmesh.sim.patients import SimulatedPatient, demo_patients
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.registry import Devices, Patients

DEMO_SYSTEM = "urn:medmesh:demo"
BACKFILL = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class DemoSubject:
    simulated: SimulatedPatient
    patient_id: str
    device_secret: str


async def _provision(database: Database, simulated: SimulatedPatient) -> DemoSubject:
    """Create (once) the demo patient and their device; give the device a fresh secret."""
    async with database.read() as conn:
        patient = await Patients(conn).find_by_identifier(DEMO_SYSTEM, simulated.name)
    if patient is None:
        patient = await admin.create_patient(
            database,
            family=simulated.name.replace("-", " ").title(),
            given="Demo",
            identifier=simulated.name,
            identifier_system=DEMO_SYSTEM,
        )
    async with database.read() as conn:
        devices = await Devices(conn).search(patient_id=patient.id, limit=1)
    if devices:
        credential = await admin.rotate_device_secret(database, devices[0].id)
    else:
        credential = await admin.register_device(
            database, display_name=f"Demo monitor ({simulated.name})", manufacturer="medmesh sim"
        )
        await admin.assign_device(
            database, credential.device_id, patient.id, datetime.now(UTC) - 2 * BACKFILL
        )
    return DemoSubject(simulated, patient.id, credential.secret)


async def _stream(base_url: str, subject: DemoSubject, interval: float) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        device = HttpDevice(client, subject.device_secret)
        now = datetime.now(UTC)
        # An hour of history, one reading set a minute; message ids come from the time, so a
        # restarted demo resends without duplicating.
        minute = (now - BACKFILL).replace(second=0, microsecond=0)
        backlog = []
        while minute < now:
            backlog += subject.simulated.readings(minute, int(minute.timestamp() // 60))
            minute += timedelta(minutes=1)
        for start in range(0, len(backlog), 500):
            await device.send(backlog[start : start + 500])
        while True:
            at = datetime.now(UTC)
            tick = int(at.timestamp() // interval)
            readings = subject.simulated.readings(at, tick)
            for reading in readings:
                reading["id"] = f"live-{reading['id']}"
            await device.send(readings)
            await asyncio.sleep(interval)


async def run_demo(settings: Settings, *, patients: int, interval: float) -> None:
    database = Database(settings.database_url)
    await migrate.upgrade(database)
    subjects = [await _provision(database, p) for p in demo_patients()[:patients]]
    token = await admin.issue_api_token(database, name="demo clinician", role=Role.CLINICIAN)
    await database.dispose()

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # surfaces the start-up error (e.g. port in use)
            return
        await asyncio.sleep(0.05)
    base_url = f"http://{settings.host}:{settings.port}"
    where = make_url(database.url).render_as_string(hide_password=True)
    print(f"medmesh is listening on {base_url} (database: {where})")
    print(f"  FHIR API:   {base_url}/fhir/metadata   API docs: {base_url}/docs")
    print(f"  clinician token (new for this run): {token}")
    print(
        f"  try: curl -H 'Authorization: Bearer {token}' "
        f"'{base_url}/fhir/Observation?patient={subjects[0].patient_id}&_sort=-date&_count=5'"
    )
    print(f"  streaming {len(subjects)} simulated patients every {interval:g} s; Ctrl-C stops.")
    streams = [asyncio.create_task(_stream(base_url, s, interval)) for s in subjects]
    try:
        await serving
    finally:
        for task in streams:
            task.cancel()
        for task in streams:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
