"""Paging end to end with every part real, on loopback: a critical glucose published over MQTT
by mosquitto_pub through Mosquitto → the on-call clinician's mailbox (aiosmtpd) gets the page
→ Chromium follows the link, signs in with password and TOTP, acknowledges in one click → the
escalation stops (the pager runs on a frozen clock the test moves past the delay)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import pyotp
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from medmesh import provisioning
from medmesh.access.identity.credentials import new_secret
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.alerts import AlertStatus
from medmesh.paging.pager import Pager
from medmesh.store import migrate
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.testing import FrozenClock
from medmesh.wiring import pager_settings
from tests.helpers import reading
from tests.live_server import free_port, live_server
from tests.mosquitto_broker import INGEST_USER, Broker
from tests.smtp_sink import Sink, smtp_sink, words_of_page

CLINICIAN, PASSWORD = "dr.oncall", "violet kettle harbour"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/page/[A-Z0-9]+)")


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield app
    finally:
        server.should_exit = True
        await task


async def test_a_critical_reading_over_mqtt_is_paged_and_acknowledged_in_the_browser(
    browser: Browser,
    sink: Sink,
    start_broker: Callable[[dict[str, str]], Broker],
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/paging.db"
    setup = Database(url)
    await migrate.upgrade(setup)
    patient = await provisioning.create_patient(
        setup, family="Doe", given="Jane", identifier="MRN-1"
    )
    device = await provisioning.register_device(setup, display_name="Meter", model="G-1")
    await provisioning.assign_device(
        setup, device.device_id, patient.id, datetime(2020, 1, 1, tzinfo=UTC)
    )
    clinician = await provisioning.create_user(
        setup, username=CLINICIAN, display_name="Dr On Call", role=Role.CLINICIAN, password=PASSWORD
    )
    await provisioning.add_to_care_team(setup, patient.id, clinician.id, added_by="test")
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(setup, CLINICIAN, secret)
    token = await provisioning.issue_user_token(setup, user_id=clinician.id, scopes="user/*.cruds")
    await setup.dispose()

    device_password, ingest_password = new_secret("mqp"), new_secret("mqp")
    broker = start_broker({device.device_id: device_password, INGEST_USER: ingest_password})
    port = free_port()
    settings = Settings(
        database_url=url,
        auto_migrate=False,
        port=port,
        public_base_url=f"http://127.0.0.1:{port}",
        alert_check_interval_seconds=0,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_starttls=False,
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port,
        mqtt_username=INGEST_USER,
        mqtt_password=ingest_password,
        paging_enabled=False,  # the test's pager, on a frozen clock
    )
    async with _serve(settings) as app:
        services = app.state.services
        clock = FrozenClock(datetime.now(UTC))
        pager = Pager(services.database, services.bus, pager_settings(settings), now=clock)
        await pager.start()
        try:
            await _page_and_acknowledge(
                Scene(
                    services.database,
                    pager,
                    clock,
                    broker,
                    device.device_id,
                    device_password,
                    token,
                    secret,
                    sink,
                    port,
                    patient.id,
                ),
                browser,
            )
        finally:
            await pager.stop()


@dataclass
class Scene:
    database: Database
    pager: Pager
    clock: FrozenClock
    broker: Broker
    device_id: str
    device_password: str
    token: str
    secret: str
    sink: Sink
    port: int
    patient_id: str


async def _page_and_acknowledge(scene: Scene, browser: Browser) -> None:
    s = scene
    pager, clock, broker, sink, port, patient_id = (
        s.pager,
        s.clock,
        s.broker,
        s.sink,
        s.port,
        s.patient_id,
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        headers = {"Authorization": f"Bearer {s.token}"}
        added = await http.post(
            "/api/v1/me/paging-channels",
            json={"kind": "email", "target": "oncall@clinic.example"},
            headers=headers,
        )
        assert added.status_code == 201, added.text
        plan = await http.put(
            f"/api/v1/patients/{patient_id}/care-plan",
            json={"escalation_chain": [{"to": "primary", "after": {"critical": 5}}]},
            headers=headers,
        )
        assert plan.status_code == 200, plan.text
    body = orjson.dumps(
        {"readings": [reading("mqtt-g-1", "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))]}
    )
    published = await asyncio.to_thread(
        subprocess.run,
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-u",
            s.device_id,
            "-P",
            s.device_password,
            "-t",
            f"medmesh/v1/devices/{s.device_id}/readings",
            "-m",
            body.decode(),
        ],
        capture_output=True,
        timeout=10,
    )
    assert published.returncode == 0, published.stderr
    for _ in range(200):
        clock.advance(timedelta(seconds=1))
        await pager.tick()
        if sink.received:
            break
        await asyncio.sleep(0.05)
    (mail,) = sink.received
    assert mail["To"] == "oncall@clinic.example"
    found = LINK.search(mail.as_string())
    assert found, mail.as_string()
    words = words_of_page(mail)
    assert "40" not in words and "Doe" not in words

    page = await browser.new_page()
    await page.goto(found.group(1))
    await page.wait_for_url(f"http://127.0.0.1:{port}/login")
    await page.get_by_label("Username").fill(CLINICIAN)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"http://127.0.0.1:{port}/login/code")
    await page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(s.secret).at(datetime.now(UTC))
    )
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(found.group(1))
    await page.get_by_role("button", name="Acknowledge 1 open alert").click()
    await page.get_by_text("Escalation has stopped").wait_for()
    await page.close()

    async with s.database.read() as conn:
        (alert,) = await Alerts(conn).search(
            patient_id, (AlertStatus.ACKNOWLEDGED,), 5, 0, within=None
        )
    assert alert.acknowledged_by == "Dr On Call (paged by email)"
    clock.advance(timedelta(minutes=30))  # far past the 5-minute delay
    await pager.tick()
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1


async def _sign_in(page: Page, base: str, username: str, password: str, secret: str) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/login/code")
    await page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(datetime.now(UTC))
    )
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/")


async def test_an_admin_keeps_the_roster_and_the_panel_sounds_the_alarm_and_counts(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/dashboard.db"
    setup = Database(url)
    await migrate.upgrade(setup)
    patient = await provisioning.create_patient(
        setup, family="Doe", given="Jane", identifier="MRN-1"
    )
    device = await provisioning.register_device(setup, display_name="Meter", model="G-1")
    await provisioning.assign_device(
        setup, device.device_id, patient.id, datetime(2020, 1, 1, tzinfo=UTC)
    )
    secrets: dict[str, str] = {}
    for username, name, role in (
        (CLINICIAN, "Dr On Call", Role.CLINICIAN),
        ("admin", "Org Admin", Role.ORG_ADMIN),
    ):
        account = await provisioning.create_user(
            setup, username=username, display_name=name, role=role, password=PASSWORD
        )
        secrets[username] = pyotp.random_base32(32)
        await provisioning.activate_totp(setup, username, secrets[username])
        if role is Role.CLINICIAN:
            await provisioning.add_to_care_team(setup, patient.id, account.id, added_by="test")
    await setup.dispose()
    # A server in its own process (the panel's live stream and ingest at once).
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        admin = await browser.new_page()
        await _sign_in(admin, base, "admin", PASSWORD, secrets["admin"])
        await admin.goto(base + "/rosters")
        await admin.get_by_label("New team").fill("nights")
        await admin.get_by_label("Time zone").fill("Europe/Berlin")
        await admin.get_by_role("button", name="Create").click()
        await admin.wait_for_url(base + "/rosters/nights")
        today = datetime.now(ZoneInfo("Europe/Berlin")).weekday()
        shift = admin.locator("form", has_text="Add a weekly shift")
        await shift.get_by_label("Who").select_option(label="Dr On Call")
        await shift.get_by_label("Day").select_option(value=str(today))
        await shift.get_by_label("From").fill("00:00")
        await shift.get_by_label("To").fill("23:59")
        await shift.get_by_role("button", name="Add shift").click()
        await admin.wait_for_url(base + "/rosters/nights")
        # The week has gaps (every other day), highlighted; today's cover names the clinician.
        assert await admin.locator("[data-gap=true]").count() >= 6
        assert await admin.get_by_text("On call now: Dr On Call").count() == 1
        await admin.close()

        page = await browser.new_page()
        await _sign_in(page, base, CLINICIAN, PASSWORD, secrets[CLINICIAN])
        panel = page.locator(".on-call-now")
        await panel.get_by_text("nights").wait_for()
        assert "Dr On Call" in await panel.inner_text()
        toggle = page.get_by_role("button", name="Alarm sound: off")
        await toggle.click()
        await page.get_by_role("button", name="Alarm sound: on").wait_for()
        assert await page.locator("body[data-alarms]").count() == 0
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            sent = await http.post(
                "/ingest/v1/readings",
                json={
                    "readings": [
                        reading("dash-1", "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))
                    ]
                },
                headers={"Authorization": f"Bearer {device.secret}"},
            )
            assert sent.status_code == 202, sent.text
        await page.locator("body[data-alarms='1']").wait_for(state="attached", timeout=10_000)
        await expect(page).to_have_title(re.compile(r"^\(1\) "), timeout=10_000)
        # The choice is kept per browser: a reload keeps the alarm on.
        await page.reload()
        await page.get_by_role("button", name="Alarm sound: on").wait_for()
        assert (await page.title()).startswith("(1) ")
        await page.close()


async def test_an_admin_adds_an_override_in_the_roster_form_and_it_covers_now(
    browser: Browser, tmp_path: Path
) -> None:
    """The override form: a datetime-local range in the team's zone covers now (the calendar
    and "on call now" say so, the rest of the week stays a gap); an end before the start is
    refused with a message and changes nothing."""
    url = f"sqlite:///{tmp_path}/roster.db"
    setup = Database(url)
    await migrate.upgrade(setup)
    secrets: dict[str, str] = {}
    for username, name, role in (
        (CLINICIAN, "Dr On Call", Role.CLINICIAN),
        ("admin", "Org Admin", Role.ORG_ADMIN),
    ):
        await provisioning.create_user(
            setup, username=username, display_name=name, role=role, password=PASSWORD
        )
        secrets[username] = pyotp.random_base32(32)
        await provisioning.activate_totp(setup, username, secrets[username])
    await setup.dispose()
    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        admin = await browser.new_page()
        await _sign_in(admin, base, "admin", PASSWORD, secrets["admin"])
        await admin.goto(base + "/rosters")
        await admin.get_by_label("New team").fill("weekend")
        await admin.get_by_label("Time zone").fill("America/New_York")
        await admin.get_by_role("button", name="Create").click()
        await admin.wait_for_url(base + "/rosters/weekend")
        assert await admin.get_by_text("On call now: nobody").count() == 1

        local = datetime.now(ZoneInfo("America/New_York")).replace(second=0, microsecond=0)
        override = admin.locator("form", has_text="Add an override")
        await override.get_by_label("Who").select_option(label="Dr On Call")
        await override.get_by_label("From").fill((local - timedelta(hours=1)).isoformat()[:16])
        await override.get_by_label("To").fill((local + timedelta(hours=2)).isoformat()[:16])
        await override.get_by_role("button", name="Add override").click()
        await admin.wait_for_url(base + "/rosters/weekend")
        assert await admin.get_by_text("On call now: Dr On Call").count() == 1
        assert await admin.locator("li", has_text="override").count() == 1
        assert await admin.locator("[data-gap=true]").count() >= 6  # the rest of the week

        backwards = admin.locator("form", has_text="Add an override")
        await backwards.get_by_label("From").fill((local + timedelta(hours=3)).isoformat()[:16])
        await backwards.get_by_label("To").fill((local + timedelta(hours=1)).isoformat()[:16])
        await backwards.get_by_role("button", name="Add override").click()
        await admin.get_by_text("Give a start and an end after it.").wait_for()
        await admin.goto(base + "/rosters/weekend")
        assert await admin.locator("li", has_text="override").count() == 1
        await admin.close()
