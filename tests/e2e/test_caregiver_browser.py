"""The caregiver path in Chromium, every part real on loopback: the patient invites a
caregiver from /me → the caregiver accepts the code, makes their account, sets up TOTP and
sees the shared readings only → a critical glucose pages the caregiver's mailbox (aiosmtpd)
without health data → the patient revokes → the caregiver's next look is refused and no
further page reaches them (the pager runs on a frozen clock the test moves)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.async_api import Browser, Page

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.config import Settings
from medmesh.paging.pager import Pager
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.testing import FrozenClock
from medmesh.wiring import pager_settings
from tests.e2e.test_paging_browser import _serve
from tests.helpers import reading
from tests.live_server import free_port
from tests.smtp_sink import Sink, smtp_sink, words_of_page

PATIENT, PATIENT_PASSWORD = "jane.doe", "a long walk by the river at dawn"
CAREGIVER, CAREGIVER_PASSWORD = "mum", "violet kettle harbour"
MAILBOX = "mum@home.example"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


async def _sign_in(page: Page, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def _tick_until(pager: Pager, clock: FrozenClock, sink: Sink, count: int) -> None:
    for _ in range(200):
        clock.advance(timedelta(seconds=1))
        await pager.tick()
        if len(sink.received) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sink.received)} pages arrived, expected {count}")


async def test_a_caregiver_is_invited_sees_shared_data_is_paged_and_revoked(
    browser: Browser, sink: Sink, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/caregivers.db"
    setup = Database(url)
    await migrate.upgrade(setup)
    patient = await provisioning.create_patient(
        setup, family="Doe", given="Jane", identifier="MRN-1"
    )
    other = await provisioning.create_patient(
        setup, family="Roe", given="Richard", identifier="MRN-2"
    )
    device = await provisioning.register_device(setup, display_name="CGM", model="G-1")
    await provisioning.assign_device(
        setup, device.device_id, patient.id, datetime(2020, 1, 1, tzinfo=UTC)
    )
    await provisioning.create_user(
        setup,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=patient.id,
    )
    await setup.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=url,
        auto_migrate=False,
        port=port,
        public_base_url=base,
        alert_check_interval_seconds=0,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_starttls=False,
        paging_enabled=False,  # the test's pager, on a frozen clock
    )
    async with _serve(settings) as app:
        services = app.state.services
        clock = FrozenClock(datetime.now(UTC))
        pager = Pager(services.database, services.bus, pager_settings(settings), now=clock)
        await pager.start()
        try:
            jane = await (await browser.new_context()).new_page()
            await _sign_in(jane, base, PATIENT, PATIENT_PASSWORD)
            await jane.wait_for_url(f"{base}/me")
            await jane.get_by_label("Critical alerts (e.g. urgent low glucose)").check()
            await jane.get_by_role("button", name="Invite a caregiver").click()
            code = (await jane.locator("#invitation-code").inner_text()).strip()

            mum = await (await browser.new_context()).new_page()
            await mum.goto(f"{base}/caregiver/accept?code={code}")
            await mum.get_by_label("Username").fill(CAREGIVER)
            await mum.get_by_label("Your name").fill("Mum")
            await mum.get_by_label("E-mail address for alerts").fill(MAILBOX)
            await mum.get_by_label("Password").fill(CAREGIVER_PASSWORD)
            await mum.get_by_role("button", name="Make my account").click()
            await mum.wait_for_url(f"{base}/login")
            await _sign_in(mum, base, CAREGIVER, CAREGIVER_PASSWORD)
            await mum.wait_for_url(f"{base}/login/enrol")
            secret = (await mum.locator("#totp-secret").inner_text()).replace(" ", "")
            await mum.get_by_label("Code from your authenticator app").fill(
                pyotp.TOTP(secret).at(datetime.now(UTC))
            )
            await mum.get_by_role("button", name="Turn on two-step sign-in").click()
            await mum.wait_for_url(f"{base}/caregiving")
            assert "Richard" not in await mum.content()
            await mum.get_by_role("link", name="Jane Doe").click()
            await mum.get_by_role("heading", name="Jane Doe: readings").wait_for()
            refused = await mum.goto(f"{base}/caregiving/{other.id}")
            assert refused is not None and refused.status == 404

            async with httpx.AsyncClient(base_url=base) as http:
                sent = await http.post(
                    "/ingest/v1/readings",
                    json={
                        "readings": [
                            reading("g-1", "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))
                        ]
                    },
                    headers={"Authorization": f"Bearer {device.secret}"},
                )
                assert sent.status_code == 202, sent.text
            await _tick_until(pager, clock, sink, 1)
            (mail,) = sink.received
            assert mail["To"] == MAILBOX
            text = mail.as_string()
            assert "A critical alert for someone you care for is waiting" in text
            words = words_of_page(mail)
            assert "40" not in words and "Doe" not in words and "lucose" not in words
            link = re.search(rf"({re.escape(base)}/page/[A-Z0-9]+)", text)
            assert link, text
            await mum.goto(link.group(1))
            await mum.get_by_role("button", name="Seen: stop paging me about this").click()
            await mum.get_by_text("The care team still has the alert").wait_for()

            await jane.goto(f"{base}/me")
            await jane.get_by_role("button", name="Stop sharing with Mum").click()
            await jane.wait_for_url(f"{base}/me")
            gone = await mum.goto(f"{base}/caregiving/{patient.id}")
            assert gone is not None and gone.status == 404
            await mum.goto(f"{base}/caregiving")
            await mum.get_by_text("Nobody shares their readings with you now").wait_for()
            clock.advance(timedelta(hours=1))
            await pager.tick()
            await asyncio.sleep(0.3)
            assert len(sink.received) == 1
        finally:
            await pager.stop()
