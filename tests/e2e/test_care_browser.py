"""Care between visits in a real browser, two parties at once against a real server (SQLite):
a patient on a phone-sized screen (390×844) writes to their care team with a photo, the
clinician's open inbox shows it without a reload, the clinician answers and the patient reads
the answer; an empty message gets a plain-language error and sends nothing. Screenshots are
kept in the test's temporary directory."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyotp
from PIL import Image
from playwright.async_api import Browser, Page

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.users import Users
from tests.e2e.test_dashboard_browser import axe_violations, eventually
from tests.live_server import live_server

CLINICIAN, CLINICIAN_PASSWORD = "ada.smith", "violet kettle harbour"
PATIENT, PATIENT_PASSWORD = "jane.doe", "a long walk by the river at dawn"


async def _provision(url: str) -> str:
    database = Database(url)
    await migrate.upgrade(database)
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="MRN-1"
    )
    ada = await provisioning.create_user(
        database,
        username=CLINICIAN,
        display_name="Dr Ada Smith",
        role=Role.CLINICIAN,
        password=CLINICIAN_PASSWORD,
    )
    await provisioning.add_to_care_team(database, patient.id, ada.id, added_by="test")
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, CLINICIAN, secret)
    await provisioning.create_user(
        database,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=patient.id,
    )
    await database.dispose()
    return secret


def _photo() -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "Pixel-7-SERIAL-2231"
    Image.new("RGB", (120, 90), (190, 70, 60)).save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


async def _sign_in(page: Page, base: str, username: str, password: str, secret: str | None) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    if secret is not None:
        await page.wait_for_url(base + "/login/code")
        await page.get_by_label("Code from your authenticator app").fill(
            pyotp.TOTP(secret).at(datetime.now(UTC))
        )
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(base + "/")
    else:
        await page.wait_for_url(base + "/me")


async def test_a_patient_writes_with_a_photo_and_the_clinician_answers_live(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    secret = await _provision(url)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        ada_context = await browser.new_context(viewport={"width": 1280, "height": 900})
        jane_context = await browser.new_context(viewport={"width": 390, "height": 844})
        ada, jane = await ada_context.new_page(), await jane_context.new_page()
        await _sign_in(ada, base, CLINICIAN, CLINICIAN_PASSWORD, secret)
        await ada.goto(base + "/inbox")
        await ada.get_by_text("No messages.").wait_for()

        await _sign_in(jane, base, PATIENT, PATIENT_PASSWORD, None)
        await jane.get_by_role("link", name="Messages").click()
        await jane.wait_for_url(base + "/me/messages")
        await jane.get_by_text("Emergency?").wait_for()
        # An empty message: a plain error, nothing sent.
        await jane.get_by_label("What is it about?").fill("Wound on my foot")
        await jane.get_by_role("button", name="Send").click()
        await jane.get_by_role("alert").filter(has_text="the message is empty").wait_for()
        assert await jane.get_by_label("What is it about?").input_value() == "Wound on my foot"
        await jane.screenshot(path=str(shots / "patient-error-390x844.png"), full_page=True)
        width = await jane.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is wider than the phone ({width}px)"

        await jane.get_by_label("Your message").fill("It is red since yesterday. Photo attached.")
        await jane.get_by_label("Add a photo or PDF (optional)").set_input_files(
            files=[{"name": "foot.jpg", "mimeType": "image/jpeg", "buffer": _photo()}]
        )
        await jane.get_by_role("button", name="Send").click()
        await jane.get_by_role("heading", name="Wound on my foot").wait_for()
        await jane.screenshot(path=str(shots / "patient-thread-390x844.png"), full_page=True)

        # The clinician's open inbox shows it, no reload.
        row = ada.locator("tr.inbox-row.unread", has_text="Wound on my foot")
        await row.wait_for(timeout=5000)
        assert "Jane Doe" in await row.inner_text()
        await ada.screenshot(path=str(shots / "clinician-inbox.png"), full_page=True)
        await row.get_by_role("link", name="Wound on my foot").click()
        photo = ada.get_by_role("img", name="Photo sent by Jane Doe")
        await photo.wait_for()
        await eventually(lambda: photo.evaluate("img => img.complete && img.naturalWidth > 0"))
        await ada.get_by_label("Your answer").fill("Please come in tomorrow at 9.")
        await ada.get_by_role("button", name="Send").click()
        await ada.get_by_text("Please come in tomorrow at 9.").wait_for()
        await ada.screenshot(path=str(shots / "clinician-thread.png"), full_page=True)

        await jane.reload()
        answer = jane.locator("li.message-care-team", has_text="Please come in tomorrow at 9.")
        await answer.wait_for()
        assert "Dr Ada Smith" in await answer.inner_text()
        await jane.screenshot(path=str(shots / "patient-answer-390x844.png"), full_page=True)
        thread_url = jane.url
        await asyncio.gather(ada_context.close(), jane_context.close())
        # The accessibility audit injects axe-core, which the pages' CSP would block.
        audit = await browser.new_context(bypass_csp=True, viewport={"width": 390, "height": 844})
        page = await audit.new_page()
        await _sign_in(page, base, PATIENT, PATIENT_PASSWORD, None)
        for path in ("/me/messages", thread_url.removeprefix(base)):
            await page.goto(base + path)
            assert await axe_violations(page) == [], path
        await audit.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "clinician-inbox.png",
        "clinician-thread.png",
        "patient-answer-390x844.png",
        "patient-error-390x844.png",
        "patient-thread-390x844.png",
    ]


async def test_refill_and_booking_with_two_patients_racing_for_one_slot(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    secret = await _provision(url)
    database = Database(url)
    rick = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-2"
    )
    async with database.read() as conn:
        ada_record = await Users(conn).find_by_username(CLINICIAN)
    assert ada_record is not None
    await provisioning.add_to_care_team(database, rick.id, ada_record.id, added_by="test")
    await provisioning.create_user(
        database,
        username="rick.roe",
        display_name="Rick Roe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=rick.id,
    )
    token = await provisioning.issue_user_token(
        database, user_id=ada_record.id, scopes="user/*.cruds"
    )
    async with database.read() as conn:
        jane_id = (await Users(conn).find_by_username(PATIENT)).patient_id  # type: ignore[union-attr]
    await database.dispose()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            prescribed = await api.post(
                f"/api/v1/patients/{jane_id}/medications",
                json={"name": "Lisinopril 10 mg tablet", "dosage": "1 tablet a day", "refills": 0},
            )
            assert prescribed.status_code == 201, prescribed.text
            schedule = await api.put(
                "/api/v1/schedule",
                json={
                    "timezone": "Europe/Berlin",
                    "kinds": ["video", "in-person"],
                    "hours": [
                        {"day": d, "start": "00:00", "end": "23:30"}
                        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
                    ],
                },
            )
            assert schedule.status_code == 200, schedule.text
        contexts = [
            await browser.new_context(viewport={"width": 1280, "height": 900}),
            await browser.new_context(viewport={"width": 390, "height": 844}),
            await browser.new_context(viewport={"width": 390, "height": 844}),
        ]
        doctor, jane, rick_page = [await c.new_page() for c in contexts]
        await _sign_in(doctor, base, CLINICIAN, CLINICIAN_PASSWORD, secret)
        await _sign_in(jane, base, PATIENT, PATIENT_PASSWORD, None)
        await _sign_in(rick_page, base, "rick.roe", PATIENT_PASSWORD, None)

        # A refill: asked, approved, seen.
        await jane.goto(base + "/me/care")
        await jane.get_by_role("button", name="Ask for a refill of Lisinopril 10 mg tablet").click()
        await jane.get_by_text("Refill asked for").wait_for()
        await doctor.goto(base + "/inbox")
        assert await doctor.title() == "Inbox · medmesh"
        assert await doctor.locator("h2#refills-title").count() == 1  # the queue, shown once
        row = doctor.locator("tr.refill-row", has_text="Lisinopril")
        await row.get_by_label("Refills").fill("3")
        await row.get_by_role("button", name="Approve").click()
        await doctor.get_by_text("No refill requests waiting.").wait_for()
        await jane.reload()
        await jane.get_by_text("approved by Dr Ada Smith").wait_for()
        assert "3 refills left" in await jane.locator("li.medication").inner_text()
        await jane.screenshot(
            path=str(shots / "patient-refill-approved-390x844.png"), full_page=True
        )

        # Both patients see the same free time; Jane takes it first, Rick is told it is gone.
        await rick_page.goto(base + "/me/care")
        slot = jane.locator("input[name=slot]").first
        value = await slot.get_attribute("value")
        assert value is not None
        await slot.check()
        await jane.get_by_label("How").select_option("video")
        await jane.get_by_role("button", name="Book this visit").click()
        await jane.locator("li.appointment", has_text="video visit with Dr Ada Smith").wait_for()
        await jane.screenshot(path=str(shots / "patient-booked-390x844.png"), full_page=True)
        await rick_page.locator(f"input[name=slot][value='{value}']").check()
        await rick_page.get_by_role("button", name="Book this visit").click()
        await (
            rick_page.get_by_role("alert").filter(has_text="just booked by someone else").wait_for()
        )
        await rick_page.screenshot(
            path=str(shots / "second-patient-refused-390x844.png"), full_page=True
        )

        await doctor.goto(base + "/inbox")
        await doctor.locator("li.visit", has_text="Jane Doe, video visit").wait_for()
        await doctor.screenshot(path=str(shots / "clinician-calendar.png"), full_page=True)
        for context in contexts:
            await context.close()
