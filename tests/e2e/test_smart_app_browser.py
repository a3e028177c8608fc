"""A SMART app in a real browser: a static page served from another loopback port (its own
origin) launches against a live medmesh server, the patient signs in and consents, and the
page exchanges the code and searches FHIR from the browser (CORS), showing the Observations.
The app is tests/e2e/smart_app/, a hand-written client doing what fhirclient.js does."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from playwright.async_api import Browser, expect

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store import migrate
from medmesh.store.database import Database
from tests.conftest import ASSIGNED_SINCE
from tests.e2e.test_dashboard_browser import axe_violations
from tests.helpers import reading
from tests.live_server import LiveServer, free_port

APP_DIR = Path(__file__).parent / "smart_app"
PATIENT, PASSWORD = "jane.doe", "a long walk by the river at dawn"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_app() -> Iterator[str]:
    """The app's page on its own loopback port; its origin."""
    handler = functools.partial(_QuietHandler, directory=str(APP_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _provision(url: str, app_origin: str) -> tuple[str, str, str]:
    """A patient with an account and a device; the app registered. (patient, device secret,
    client_id)"""
    database = Database(url)
    await migrate.upgrade(database)
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="MRN-1"
    )
    await provisioning.create_user(
        database,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PASSWORD,
        patient_id=patient.id,
    )
    device = await provisioning.register_device(database, display_name="Cuff", model="BP-1")
    await provisioning.assign_device(database, device.device_id, patient.id, ASSIGNED_SINCE)
    client_id = await provisioning.register_app_client(
        database,
        name="Vitals Viewer",
        redirect_uris=[f"{app_origin}/index.html"],
        scopes="patient/*.rs",
    )
    await database.dispose()
    return patient.id, device.secret, client_id


async def test_a_smart_app_launches_gets_consent_and_shows_the_patients_observations(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with static_app() as app_origin:
        patient_id, device_secret, client_id = await _provision(url, app_origin)
        server = LiveServer(
            url, tmp_path / "server.log", port=port, env={"MEDMESH_PUBLIC_BASE_URL": base}
        )
        server.start()
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                sent = await http.post(
                    "/ingest/v1/readings",
                    json={"readings": [reading("r-1", value=71), reading("r-2", value=75)]},
                    headers={"Authorization": f"Bearer {device_secret}"},
                )
                assert sent.status_code == 202, sent.text
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(f"{app_origin}/index.html?iss={base}/fhir#client_id={client_id}")
            # medmesh's sign-in, reached from the app's authorization request.
            await page.wait_for_url(f"{base}/login")
            await page.get_by_label("Username").fill(PATIENT)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/oauth/authorize/consent?*")
            await expect(page.get_by_role("heading", level=1)).to_contain_text("Vitals Viewer")
            await expect(page.get_by_text("Open your own record")).to_be_visible()
            await page.screenshot(path=str(artifacts / "smart-consent.png"), full_page=True)
            await page.get_by_role("button", name="Allow", exact=True).click()
            # Back in the app: the code exchange and the search ran from its own origin.
            await page.wait_for_url(f"{app_origin}/index.html?*")
            await expect(page.locator("#status")).to_have_text("Showing 2 observations")
            await expect(page.locator("#patient")).to_have_text(patient_id)
            items = page.locator("#observations li")
            await expect(items).to_have_count(2)
            texts = sorted(await items.all_text_contents())
            assert any("71" in t for t in texts) and any("75" in t for t in texts), texts
            await page.screenshot(path=str(artifacts / "smart-app.png"), full_page=True)
            await context.close()

            # The consent screen's accessibility, checked by axe in a context that lets its
            # script in (the flow above ran under the pages' real CSP).
            audit = await browser.new_context(bypass_csp=True)
            page = await audit.new_page()
            await page.goto(f"{app_origin}/index.html?iss={base}/fhir#client_id={client_id}")
            await page.wait_for_url(f"{base}/login")
            await page.get_by_label("Username").fill(PATIENT)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/oauth/authorize/consent?*")
            assert await axe_violations(page) == []
            await page.get_by_role("button", name="Don't allow").click()
            await page.wait_for_url(f"{app_origin}/index.html?*")
            await expect(page.locator("#status")).to_have_text("Not allowed: access_denied")
            await audit.close()
        finally:
            server.stop()
