"""A video visit in two real Chromium contexts with fake camera and microphone, over loopback
against a real server (SQLite): the patient waits until the clinician admits them, each side
then decodes the other's video and receives audio (from RTCPeerConnection.getStats()), a
chat line reaches both, and a third signed-in person is refused the page and the WebSocket.
Screenshots of both sides go to test-artifacts/e2e/."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Schedule,
    VisitKind,
    WeeklyHours,
)
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.database import Database
from medmesh.store.users import Users
from medmesh.store.visits import TimeEntries, Visits
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_care_browser import (
    CLINICIAN,
    CLINICIAN_PASSWORD,
    PATIENT,
    PATIENT_PASSWORD,
    _provision,
    _sign_in,
)
from tests.e2e.test_dashboard_browser import eventually
from tests.live_server import live_server

MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
OTHER, OTHER_PASSWORD = "rick.roe", "another long walk by the sea at dusk"

STATS = """async () => {
  const pc = window.medmeshVisitPeer;
  if (!pc) return null;
  const found = {framesDecoded: 0, audioBytes: 0, state: pc.connectionState};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") found.framesDecoded += r.framesDecoded || 0;
    if (r.type === "inbound-rtp" && r.kind === "audio") found.audioBytes += r.bytesReceived || 0;
  });
  return found;
}"""


@pytest.fixture
async def media_browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *MEDIA_ARGS]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _video_appointment(url: str) -> str:
    """A video appointment that began two minutes ago, booked straight into the store (the
    booking rules refuse the past; joining is what this test is about)."""
    database = Database(url)
    async with database.read() as conn:
        ada = await Users(conn).find_by_username(CLINICIAN)
        jane = await Users(conn).find_by_username(PATIENT)
    assert ada is not None and jane is not None and jane.patient_id is not None
    now = datetime.now(UTC).replace(microsecond=0)
    schedule = Schedule(
        id=str(uuid.uuid4()),
        clinician_id=ada.id,
        clinician_name="Dr Ada Smith",
        timezone="UTC",
        slot_minutes=30,
        kinds=(VisitKind.VIDEO,),
        hours=(WeeklyHours(now.weekday(), time(0, 0), time(23, 30)),),
        book_ahead_days=30,
        cancel_hours=0,
        updated_at=now,
    )
    appointment = Appointment(
        id=str(uuid.uuid4()),
        schedule_id=schedule.id,
        clinician_id=ada.id,
        clinician_name="Dr Ada Smith",
        patient_id=jane.patient_id,
        start=now - timedelta(minutes=2),
        end=now + timedelta(minutes=28),
        kind=VisitKind.VIDEO,
        status=AppointmentStatus.BOOKED,
        reason="Follow-up of blood pressure",
        booked_at=now,
        booked_by=jane.id,
    )
    async with database.write() as conn:
        await Schedules(conn).put(schedule)
        await Appointments(conn).book(appointment)
    other = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-2"
    )
    await provisioning.create_user(
        database,
        username=OTHER,
        display_name="Rick Roe",
        role=Role.PATIENT,
        password=OTHER_PASSWORD,
        patient_id=other.id,
    )
    await database.dispose()
    return appointment.id


async def _stats(page: Page) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await page.evaluate(STATS)
    return found


async def _flowing(page: Page) -> bool:
    found = await _stats(page)
    return found is not None and found["framesDecoded"] > 0 and found["audioBytes"] > 0


WS_REFUSAL = """(url) => new Promise((resolve) => {
  setTimeout(() => resolve({code: null, message: "no answer in 10 s"}), 10000);
  let ws;
  try { ws = new WebSocket(url); } catch (e) { resolve({code: null, message: String(e)}); return; }
  let message = null;
  ws.onmessage = (e) => { message = JSON.parse(e.data).message; };
  ws.onclose = (e) => resolve({code: e.code, message});
})"""


async def test_patient_and_clinician_see_and_hear_each_other_after_admission(
    media_browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    secret = await _provision(url)
    appointment_id = await _video_appointment(url)
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        visit = f"{base}/visits/{appointment_id}"
        ada_context = await media_browser.new_context(viewport={"width": 1280, "height": 900})
        jane_context = await media_browser.new_context(viewport={"width": 1280, "height": 900})
        rick_context = await media_browser.new_context()
        ada, jane = await ada_context.new_page(), await jane_context.new_page()
        rick = await rick_context.new_page()
        await _sign_in(ada, base, CLINICIAN, CLINICIAN_PASSWORD, secret)
        await _sign_in(jane, base, PATIENT, PATIENT_PASSWORD, None)
        await _sign_in(rick, base, OTHER, OTHER_PASSWORD, None)

        # The patient comes first and waits.
        await jane.goto(visit)
        await jane.get_by_text("You are in the waiting room").wait_for()
        await ada.goto(visit)
        await ada.get_by_role("heading", name="Latest vitals").wait_for()
        await ada.get_by_text("Jane Doe is in the waiting room.").wait_for()
        assert await _stats(jane) is None, "no call before the clinician admits"
        await ada.get_by_role("button", name="Admit").click()

        await eventually(lambda: _flowing(ada), timeout=30)
        await eventually(lambda: _flowing(jane), timeout=30)
        for side in (ada, jane):
            found = await _stats(side)
            assert found is not None and found["framesDecoded"] > 0 and found["audioBytes"] > 0

        # Chat reaches both sides.
        await jane.get_by_label("Message").fill("Can you hear me?")
        await jane.get_by_role("button", name="Send").click()
        await ada.locator("#chat-log").get_by_text("Can you hear me?").wait_for()
        await ada.get_by_role("button", name="Mute").click()
        await jane.get_by_text("The other side is muted.").wait_for()
        await ada.screenshot(path=str(artifacts / "visit-clinician.png"), full_page=True)
        await jane.screenshot(path=str(artifacts / "visit-patient.png"), full_page=True)

        # Someone else: the page and the WebSocket both refuse them, nothing is joined.
        response = await rick.goto(visit)
        assert response is not None and response.status in (403, 404)
        await rick.goto(base + "/me")
        refused = await rick.evaluate(
            WS_REFUSAL, visit.replace("http://", "ws://") + "/signal?tab=x"
        )
        assert refused["code"] == 4403, refused
        assert "not yours" in refused["message"]

        # A second tab of the patient is refused; the first stays in the call.
        second = await jane_context.new_page()
        await second.goto(base + "/me")
        refused = await second.evaluate(
            WS_REFUSAL, visit.replace("http://", "ws://") + "/signal?tab=another-tab"
        )
        assert refused["code"] == 4409, refused
        assert "another tab" in refused["message"]
        assert await _flowing(jane)

        # The clinician writes the note, then leaves: the visit's time is recorded.
        await ada.get_by_label("Note (kept in the record)").fill("BP controlled; continue.")
        await ada.get_by_role("button", name="Save note").click()
        await ada.get_by_label("Note (kept in the record)").wait_for()
        for context in (ada_context, jane_context, rick_context):
            await context.close()

        database = Database(url)

        async def visit_time_recorded() -> bool:
            async with database.read() as conn:
                entries = await TimeEntries(conn).search(clinician_id=None)
            return any(e.kind.value == "visit" and e.interactive for e in entries)

        await eventually(visit_time_recorded, timeout=10)
        async with database.read() as conn:
            stored = await Visits(conn).get(appointment_id)
        await database.dispose()
    assert stored is not None
    assert stored.admitted_at is not None
    assert stored.note == "BP controlled; continue."
