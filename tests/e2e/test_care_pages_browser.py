"""The clinician's care pages and the patient's readings in a real browser (Chromium) against
a real server (SQLite): the clinician publishes their hours by the form, a patient books a
video visit and writes, the clinician's patient page shows the messages, medications and
appointments, the calendar grid shows the booked video visit, a medication added by the form
reaches the patient's /me/care; a patient on a 390×844 screen sees their readings as a chart
and when their device last reported. Screenshots are kept in the test's temporary directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from playwright.async_api import Browser

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.users import Users
from tests.conftest import make_world
from tests.e2e.test_care_browser import (
    CLINICIAN,
    CLINICIAN_PASSWORD,
    PATIENT,
    PATIENT_PASSWORD,
    _provision,
    _sign_in,
)
from tests.e2e.test_dashboard_browser import axe_violations, eventually
from tests.helpers import stamp
from tests.live_server import live_server

TOKYO = ZoneInfo("Asia/Tokyo")


async def test_the_clinician_sees_care_on_the_patient_page_and_calendar_and_prescribes_by_form(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    secret = await _provision(url)
    database = Database(url)
    async with database.read() as conn:
        jane = await Users(conn).find_by_username(PATIENT)
    assert jane is not None and jane.patient_id is not None
    await database.dispose()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        # The clinician's browser is in Tokyo, their schedule in Berlin: the grid is in Tokyo.
        doctor_context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo"
        )
        patient_context = await browser.new_context(
            viewport={"width": 390, "height": 844}, timezone_id="Europe/Berlin"
        )
        doctor, patient = await doctor_context.new_page(), await patient_context.new_page()
        await _sign_in(doctor, base, CLINICIAN, CLINICIAN_PASSWORD, secret)

        # Hours by the form: every day 07:00–21:00, video only.
        await doctor.goto(base + "/inbox")
        await doctor.get_by_role("link", name="Your hours").click()
        await doctor.wait_for_url(base + "/inbox/schedule")
        assert await doctor.get_by_label("Time zone (e.g. Europe/Berlin)").input_value() == (
            "Asia/Tokyo"  # filled in from the browser
        )
        await doctor.get_by_label("In person").uncheck()
        for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
            await doctor.get_by_label(f"{day} from (first range)").fill("07:00")
            await doctor.get_by_label(f"{day} until (first range)").fill("21:00")
            await doctor.get_by_label(f"{day} from (second range)").fill("")
            await doctor.get_by_label(f"{day} until (second range)").fill("")
        await doctor.get_by_label("Time zone (e.g. Europe/Berlin)").fill("Berlin")
        await doctor.get_by_role("button", name="Publish your hours").click()
        await (
            doctor.get_by_role("alert")
            .filter(has_text="Time zone must be an IANA time zone")
            .wait_for()
        )
        await doctor.get_by_label("Time zone (e.g. Europe/Berlin)").fill("Europe/Berlin")
        await doctor.get_by_label("Slot length (minutes)").fill("30")
        await doctor.get_by_role("button", name="Publish your hours").click()
        await doctor.get_by_text("Saved.").wait_for()

        # The patient books a video visit and writes.
        await _sign_in(patient, base, PATIENT, PATIENT_PASSWORD, None)
        await patient.goto(base + "/me/care")
        slot = patient.locator("input[name=slot]").first
        value = await slot.get_attribute("value")
        assert value is not None
        start = datetime.fromisoformat(value.split("|", 1)[1])
        await slot.check()
        await patient.get_by_label("How").select_option("video")
        await patient.get_by_role("button", name="Book this visit").click()
        await patient.locator("li.appointment", has_text="video visit").wait_for()
        await patient.goto(base + "/me/messages")
        await patient.get_by_label("What is it about?").fill("Swollen ankles")
        await patient.get_by_label("Your message").fill("Since the new tablets.")
        await patient.get_by_role("button", name="Send").click()
        await patient.get_by_role("heading", name="Swollen ankles").wait_for()

        # The patient page: messages, appointments; a medication added by the form.
        await doctor.goto(f"{base}/patients/{jane.patient_id}")
        care = doctor.locator("section#care")
        await care.locator("li.patient-thread.unread", has_text="Swollen ankles").wait_for()
        await care.locator("li.appointment-upcoming", has_text="video visit").wait_for()
        await care.get_by_label("Medicine (name and strength)").fill("Furosemide 20 mg tablet")
        await care.get_by_label("How to take it").fill("1 tablet in the morning")
        await care.get_by_label("Refills allowed").fill("2")
        await care.get_by_role("button", name="Add medication").click()
        await care.locator("li.medication-active", has_text="Furosemide 20 mg tablet").wait_for()
        await doctor.screenshot(path=str(shots / "clinician-patient-care.png"), full_page=True)

        # The calendar grid, in the browser's zone, shows the booked video visit.
        await doctor.goto(base + "/inbox")
        await doctor.get_by_role("link", name="Open your calendar").click()
        await doctor.get_by_text("Times in Asia/Tokyo.").wait_for()  # the browser's zone
        day = start.astimezone(TOKYO).date().isoformat()
        await doctor.goto(f"{base}/inbox/calendar?view=week&date={day}")
        await doctor.wait_for_url(lambda u: "tz=Asia" in u)
        booked = doctor.locator("table.calendar-grid div.booked", has_text="video visit")
        await booked.wait_for()
        assert start.astimezone(TOKYO).strftime("%H:%M") in await booked.inner_text()
        assert "Jane Doe" in await booked.inner_text()
        await doctor.get_by_text("Times in Asia/Tokyo.").wait_for()
        await doctor.screenshot(path=str(shots / "clinician-calendar-week.png"), full_page=True)

        # The patient sees the new medicine.
        await patient.goto(base + "/me/care")
        await patient.locator("li.medication", has_text="Furosemide 20 mg tablet").wait_for()
        await patient.screenshot(path=str(shots / "patient-new-medicine-390x844.png"))
        await doctor_context.close()
        await patient_context.close()
    assert len(list(shots.iterdir())) == 3


async def test_a_patient_on_a_phone_sees_their_readings_as_a_chart_and_their_device(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    database = Database(url)
    await migrate.upgrade(database)
    world = await make_world(database, "MRN-1")
    await provisioning.create_user(
        database,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=world.patient_id,
    )
    await database.dispose()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    now = datetime.now(UTC)
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        readings = [
            {
                "id": f"hr-{i}",
                "type": "heart-rate",
                "time": stamp(now - timedelta(hours=48 - 2 * i)),
                "value": 62 + i % 9,
                "unit": "/min",
            }
            for i in range(24)
        ]
        async with httpx.AsyncClient(base_url=base) as device:
            sent = await device.post(
                "/ingest/v1/readings", json={"readings": readings}, headers=world.device_headers
            )
            assert sent.status_code == 202, sent.text
        context = await browser.new_context(viewport={"width": 390, "height": 844})
        page = await context.new_page()
        await _sign_in(page, base, PATIENT, PATIENT_PASSWORD, None)
        await page.get_by_role("link", name="My readings").click()
        await page.wait_for_url(base + "/me/readings")
        device_row = page.locator("li.my-device")
        await device_row.wait_for()
        assert "Last sent something" in await device_row.inner_text()
        chart = page.locator("figure#chart-hr")
        await chart.locator("canvas").wait_for()
        await eventually(
            lambda: page.evaluate("() => window.medmeshCharts.hr.plot.data[0].length === 24")
        )
        assert "24 readings" in await chart.locator("figcaption").inner_text()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is wider than the phone ({width}px)"
        # Keyboard: the ranges are links reached by Tab and followed by Enter.
        await page.get_by_role("link", name="Last day").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_url(base + "/me/readings?range=24h")
        await page.locator("figure#chart-hr canvas").wait_for()
        await page.screenshot(path=str(shots / "patient-readings-390x844.png"), full_page=True)
        await context.close()
        audit = await browser.new_context(bypass_csp=True, viewport={"width": 390, "height": 844})
        checked = await audit.new_page()
        await _sign_in(checked, base, PATIENT, PATIENT_PASSWORD, None)
        await checked.goto(base + "/me/readings")
        assert await axe_violations(checked) == []
        await audit.close()
    assert [p.name for p in shots.iterdir()] == ["patient-readings-390x844.png"]
