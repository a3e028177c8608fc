"""The imaging viewer in Chromium against a real server (SQLite): a clinician opens the
patient's MRI series from the patient page, scrolls slices with the wheel and the keyboard,
changes the window by dragging and with a preset, zooms; the screenshot shows an image (its
pixels vary, it is not blank); an instance the server cannot decode shows a placeholder.

Screenshots go to test-artifacts/e2e/."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pyotp
from PIL import Image
from playwright.async_api import Browser, Page, expect

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.synthetic import mr_series
from medmesh.store import migrate
from medmesh.store.database import Database
from tests.live_server import live_server

USERNAME, PASSWORD = "rad.clinician", "violet kettle harbour"


async def provision(url: str) -> tuple[str, str]:
    database = Database(url)
    await migrate.upgrade(database)
    patient = await provisioning.create_patient(
        database, family="Okafor", given="Chidi", identifier="MRN-OKAFOR"
    )
    clinician = await provisioning.create_user(
        database, username=USERNAME, display_name="Dr Rad", role=Role.CLINICIAN, password=PASSWORD
    )
    await provisioning.add_to_care_team(database, patient.id, clinician.id, added_by="test")
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, USERNAME, secret)
    archive = ImagingArchive(database)
    for content in mr_series(patient_id="MRN-OKAFOR", issuer=None, patient_name="Okafor^Chidi"):
        await archive.receive(content, "TEST@127.0.0.1")
    # A 12-bit JPEG (JPEG Extended) this server stores but cannot decode.
    extended = pydicom.dcmread(pydicom.data.get_testdata_file("JPGExtended.dcm"))
    extended.PatientID = "MRN-OKAFOR"
    buffer = io.BytesIO()
    extended.save_as(buffer, enforce_file_format=True)
    await archive.receive(buffer.getvalue(), "TEST@127.0.0.1")
    await database.dispose()
    return patient.id, secret


async def sign_in(page: Page, base: str, secret: str) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(USERNAME)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/login/code")
    await page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(datetime.now(UTC))
    )
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/")


async def shown_pixels(page: Page) -> np.ndarray:
    """The frame as drawn (the image element alone: no overlay text)."""
    shot = await page.locator("#frame").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)


async def test_a_clinician_scrolls_an_mri_series_and_changes_the_window(
    browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    patient_id, secret = await provision(url)
    problems: list[str] = []
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        await sign_in(page, base, secret)

        await page.goto(f"{base}/patients/{patient_id}")
        studies = page.get_by_role("region", name="Imaging")
        await studies.get_by_role("link", name="MR").first.wait_for()
        assert "24 images" in await studies.inner_text()
        await studies.get_by_role("link", name="MR").first.click()
        await page.wait_for_url(f"{base}/patients/{patient_id}/imaging/*")
        viewport = page.locator("#viewport")
        await expect(viewport).to_have_attribute("data-state", "loaded")
        assert await page.locator("#slice-text").inner_text() == "Slice 13 / 24"
        assert "Okafor, Chidi" in await viewport.inner_text()  # overlay: patient, date, slice
        assert "2026-11-30" in await viewport.inner_text()
        middle = await shown_pixels(page)
        assert middle.std() > 20, "the viewer shows a blank image"
        assert (middle > 100).mean() > 0.1  # the head phantom fills a good part of the frame
        await page.screenshot(path=artifacts / "imaging-viewer.png")

        # Scroll: the wheel and the keyboard change the slice, and the image with it.
        await viewport.hover()
        await page.mouse.wheel(0, 100)
        await expect(viewport).to_have_attribute("data-index", "13")
        await viewport.focus()
        for _ in range(8):
            await page.keyboard.press("ArrowDown")
        await expect(viewport).to_have_attribute("data-index", "21")
        assert await page.locator("#slice-text").inner_text() == "Slice 22 / 24"
        assert "Position" in await page.locator("#position-text").inner_text()
        edge = await shown_pixels(page)
        assert not np.array_equal(edge, middle)

        # Window: the file's own is shown, then dragging widens it and the picture changes.
        before = await page.locator("#window-text").inner_text()
        assert before == "W 1200 · L 600"
        box = await viewport.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + 300, box["y"] + 300)
        await page.mouse.down()
        await page.mouse.move(box["x"] + 500, box["y"] + 250, steps=5)
        await page.mouse.up()
        await expect(page.locator("#window-text")).not_to_have_text("W 1200 · L 600")
        await page.wait_for_timeout(300)  # the debounced re-render
        dragged = await shown_pixels(page)
        assert not np.array_equal(dragged, edge)

        # Zoom in: the overlay says so and the image grows.
        await page.get_by_role("button", name="Zoom in").click()
        assert "Zoom 1.2×" in await page.locator("#zoom-text").inner_text()
        await page.screenshot(path=artifacts / "imaging-viewer-windowed.png")

        # The undecodable instance's study shows a placeholder, not a blank page.
        await page.goto(f"{base}/patients/{patient_id}")
        await page.get_by_role("region", name="Imaging").get_by_role("link", name="NM").click()
        placeholder = page.locator("#placeholder")
        await placeholder.wait_for(state="visible")
        assert "cannot be shown here" in await placeholder.inner_text()
        await page.screenshot(path=artifacts / "imaging-viewer-placeholder.png")
        await context.close()
    assert problems == []


async def test_a_clinician_outside_the_care_team_cannot_open_the_viewer(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    patient_id, _ = await provision(url)
    database = Database(url)
    await provisioning.create_user(
        database,
        username="dr.outside",
        display_name="Dr Out",
        role=Role.CLINICIAN,
        password=PASSWORD,
    )
    outside_secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, "dr.outside", outside_secret)
    await database.dispose()
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(base + "/login")
        await page.get_by_label("Username").fill("dr.outside")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(base + "/login/code")
        await page.get_by_label("Code from your authenticator app").fill(
            pyotp.TOTP(outside_secret).at(datetime.now(UTC))
        )
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(base + "/")
        response = await page.goto(f"{base}/patients/{patient_id}")
        assert response is not None and response.status == 404
        frames = await page.request.get(f"{base}/patients/{patient_id}/imaging/series/x/thumbnail")
        assert frames.status == 404
        await context.close()
