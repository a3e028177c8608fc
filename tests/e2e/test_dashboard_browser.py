"""The clinician dashboard in a real browser against a real server (SQLite): sign in with a
username, password and TOTP code, watch the panel and a patient's charts update live as a
device posts readings, see a critical SpO2 alert appear within a second, acknowledge it from
the keyboard, and pass an automated accessibility audit (axe-core, WCAG 2 A and AA rules).

Screenshots go to test-artifacts/e2e/. Run with -s to see the timings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
from playwright.async_api import Browser, ConsoleMessage, Locator, Page

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store import migrate
from medmesh.store.database import Database
from tests.helpers import stamp
from tests.live_server import live_server

ALERT_DEADLINE = 1.0  # seconds from the critical reading's POST to the alert on screen
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"


USERNAME = "ada.smith"
PASSWORD = "violet kettle harbour"
NEWCOMER = "grace.hopper"
PATIENT = "jane.doe"
PATIENT_PASSWORD = "a long walk by the river at dawn"


@dataclass(frozen=True, slots=True)
class Ward:
    totp_secret: str
    patient_id: str
    device_id: str
    device_secret: str
    other_secret: str


async def provision(url: str) -> Ward:
    database = Database(url)
    await migrate.upgrade(database)
    since = datetime.now(UTC) - timedelta(days=1)
    made = {}
    for family, given in (("Doe", "Jane"), ("Okafor", "Chidi"), ("Lindqvist", "Anna")):
        patient = await provisioning.create_patient(
            database, family=family, given=given, identifier=f"MRN-{family.upper()}"
        )
        device = await provisioning.register_device(
            database, display_name=f"Monitor {given}", manufacturer="Acme", model="PX-3"
        )
        await provisioning.assign_device(database, device.device_id, patient.id, since)
        made[family] = (patient.id, device)
    ada = await provisioning.create_user(
        database,
        username=USERNAME,
        display_name="Dr Ada Smith",
        role=Role.CLINICIAN,
        password=PASSWORD,
    )
    for patient_id, _ in made.values():  # her panel: the patients she cares for
        await provisioning.add_to_care_team(database, patient_id, ada.id, added_by="test")
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, USERNAME, secret)
    await provisioning.create_user(
        database,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=made["Doe"][0],
    )
    await provisioning.create_user(  # not enrolled yet: gets the TOTP set-up page
        database,
        username=NEWCOMER,
        display_name="Dr Grace Hopper",
        role=Role.CLINICIAN,
        password=PASSWORD,
    )
    await database.dispose()
    doe_id, doe_device = made["Doe"]
    return Ward(secret, doe_id, doe_device.device_id, doe_device.secret, made["Okafor"][1].secret)


def reading(message_id: str, kind: str, at: datetime, value: Any, unit: str) -> dict[str, Any]:
    return {"id": message_id, "type": kind, "time": stamp(at), "value": value, "unit": unit}


def history(now: datetime) -> list[dict[str, Any]]:
    """Two hours of a stable patient up to 10 minutes ago: heart rate and SpO2 each minute,
    the rest now and then."""
    readings = []
    for m in range(130, 10, -1):
        at = now - timedelta(minutes=m)
        readings.append(reading(f"hr-{m}", "heart-rate", at, 72 + m % 9, "/min"))
        readings.append(reading(f"spo2-{m}", "oxygen-saturation", at, 97 - m % 3, "%"))
        if m % 30 == 0:
            pressure = {"systolic": 124 + m % 11, "diastolic": 79 + m % 5}
            readings += [
                reading(f"bp-{m}", "blood-pressure", at, pressure, "mm[Hg]"),
                reading(f"t-{m}", "body-temperature", at, 36.9, "Cel"),
                reading(f"g-{m}", "blood-glucose", at, 104 + m % 13, "mg/dL"),
                reading(f"rr-{m}", "respiratory-rate", at, 15, "/min"),
            ]
    return readings


async def post(http: httpx.AsyncClient, secret: str, *readings: dict[str, Any]) -> None:
    response = await http.post(
        "/ingest/v1/readings",
        json={"readings": list(readings)},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 202, response.text
    assert not response.json()["rejected"], response.text


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the page did not update in time"
        await asyncio.sleep(0.02)


async def text_is(locator: Locator, expected: str) -> bool:
    return bool(await locator.count()) and (await locator.inner_text()).strip() == expected


async def number_above(locator: Locator, attribute: str, floor: int) -> bool:
    return int(await locator.get_attribute(attribute) or "0") > floor


async def enter_password(
    page: Page, base_url: str, username: str = USERNAME, then: str = "/login/code"
) -> None:
    await page.goto(base_url + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base_url + then)


async def enter_code(page: Page, base_url: str, secret: str, *, steps_ahead: int = 0) -> None:
    """The code an authenticator app shows; steps_ahead=1 for a second sign-in that may fall
    in the 30 seconds whose code the first used up (the next code is accepted too)."""
    code = pyotp.TOTP(secret).at(datetime.now(UTC), counter_offset=steps_ahead)
    await page.get_by_label("Code from your authenticator app").fill(code)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base_url + "/")


async def test_a_clinician_follows_a_patient_live_and_acknowledges_a_critical_alert(
    browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    ward = await provision(url)
    now = datetime.now(UTC)
    problems: list[str] = []
    began = time.monotonic()

    def step(label: str) -> None:
        print(f"{time.monotonic() - began:6.2f} s  {label}")

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations land here too
            problems.append(f"{message.text} at {message.location['url']}")

    with live_server(url, tmp_path / "server.log") as server:
        base = server.base_url
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await post(http, ward.device_secret, *history(now))
            await post(http, ward.other_secret, *history(now))
            # A glucose reading above 250 mg/dL opens an alert for the second patient at once.
            await post(
                http, ward.other_secret, reading("g-high", "blood-glucose", now, 320, "mg/dL")
            )
            step("server up, readings posted")

            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", console)

            # Signing in: pages need a session, a wrong password gets none; the right one and
            # the authenticator's code do.
            await page.goto(base + "/")
            assert page.url == base + "/login"
            await page.get_by_label("Username").fill(USERNAME)
            await page.get_by_label("Password").fill("not the password")
            await page.keyboard.press("Enter")
            await page.get_by_role("alert").filter(has_text="not right").wait_for()
            assert await page.get_by_label("Username").input_value() == USERNAME
            assert await page.get_by_label("Password").get_attribute("aria-invalid") == "true"
            problems.clear()  # the refused sign-in's 401 is logged by the browser, as it should
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(base + "/login/code")
            await enter_code(page, base, ward.totp_secret)
            step("signed in")

            # The panel: most urgent first; the first Tab reaches the skip link, visibly.
            names = await page.locator("a.patient-name").all_inner_texts()
            assert names == ["Okafor, Chidi", "Doe, Jane", "Lindqvist, Anna"]
            await page.keyboard.press("Tab")
            focused = page.locator(":focus")
            assert await focused.inner_text() == "Skip to main content"
            outline = await focused.evaluate("e => getComputedStyle(e).outlineStyle")
            assert outline == "solid"
            await page.keyboard.press("Enter")
            assert await page.evaluate("document.activeElement.id") == "main"

            # Rows follow the readings live.
            await page.locator("#live-status.is-live").wait_for()
            heart = page.locator(f"#row-{ward.patient_id} td[data-label^='Heart rate'] .value")
            await post(http, ward.device_secret, reading("hr-now", "heart-rate", now, 118, "/min"))
            await eventually(lambda: text_is(heart, "118"))
            step("panel row updated live")
            await page.screenshot(path=artifacts / "panel.png", full_page=True)
            await page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, upright
            await page.screenshot(path=artifacts / "panel-tablet.png", full_page=True)
            await page.set_viewport_size({"width": 1280, "height": 900})

            # The patient page: charts that grow as readings arrive.
            await page.get_by_role("link", name="Doe, Jane").click()
            await page.locator("#chart-hr .uplot").wait_for()
            await page.locator("#live-status.is-live").wait_for()
            spo2 = page.locator("#chart-spo2")
            points = int(await spo2.get_attribute("data-points") or "0")
            assert points > 100
            late = now - timedelta(minutes=9)  # newer than the history, older than what follows
            await post(
                http, ward.device_secret, reading("spo2-late", "oxygen-saturation", late, 95, "%")
            )
            await eventually(lambda: number_above(spo2, "data-points", points))
            assert await page.locator("#latest-spo2 .latest-value").inner_text() == "95"
            step("chart appended a reading")

            # A critical desaturation: below 85 % for five minutes.
            start = late + timedelta(seconds=10)
            await post(
                http,
                ward.device_secret,
                *(
                    reading(
                        f"desat-{m}", "oxygen-saturation", start + timedelta(minutes=m), 82, "%"
                    )
                    for m in range(5)
                ),
            )
            await asyncio.sleep(0.3)
            critical = page.locator("#alert-history .sev-border-critical")
            assert await critical.count() == 0  # four minutes prove nothing yet
            sent = time.monotonic()
            final = start + timedelta(minutes=5)
            await post(
                http, ward.device_secret, reading("desat-5", "oxygen-saturation", final, 81, "%")
            )
            await critical.wait_for(timeout=(ALERT_DEADLINE + 1) * 1000)
            elapsed = time.monotonic() - sent
            print(f"critical alert on screen {elapsed * 1000:.0f} ms after the reading's POST")
            assert elapsed < ALERT_DEADLINE
            assert "Critical" in await critical.locator(".badge").first.inner_text()
            announcer = page.locator("#announce-urgent")
            await eventually(
                lambda: text_is(announcer, "New Critical alert: Low oxygen saturation")
            )
            step("alert shown and announced")
            await page.screenshot(path=artifacts / "patient.png", full_page=True)
            await critical.screenshot(path=artifacts / "alert.png")

            # Acknowledge from the keyboard: focus the button, press Enter.
            await critical.get_by_role("button", name="Acknowledge").focus()
            await page.keyboard.press("Enter")
            await critical.locator(".status-acknowledged").wait_for()
            assert "Acknowledged by Dr Ada Smith" in await critical.inner_text()
            alert_id = await critical.get_attribute("id")

            async def focus_kept() -> bool:  # htmx restores focus once the swap has settled
                return bool(await page.evaluate("document.activeElement.id") == alert_id)

            await eventually(focus_kept)
            await critical.screenshot(path=artifacts / "alert-acknowledged.png")
            step("acknowledged")

            # Back on the panel, the patient with the critical alert comes first.
            await page.get_by_role("link", name="Patient panel").first.click()
            names = await page.locator("a.patient-name").all_inner_texts()
            assert names[0] == "Doe, Jane"
            await page.screenshot(path=artifacts / "panel-critical.png", full_page=True)

            await page.goto(base + f"/devices/{ward.device_id}")
            await page.screenshot(path=artifacts / "device.png", full_page=True)

            # Signed out, the pages are closed again.
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(base + "/login")
            await page.goto(base + f"/patients/{ward.patient_id}")
            assert page.url == base + "/login"
            await context.close()
            assert not problems, problems

            # The accessibility audit, in a context that lets the test inject axe-core past the
            # pages' Content-Security-Policy.
            audit = await browser.new_context(
                bypass_csp=True, viewport={"width": 1280, "height": 900}
            )
            page = await audit.new_page()
            await page.goto(base + "/login")
            found = {"login": await axe_violations(page)}
            await enter_password(page, base)
            found["code"] = await axe_violations(page)
            await page.screenshot(path=artifacts / "sign-in-code.png")
            await enter_code(page, base, ward.totp_secret, steps_ahead=1)
            for name, path in (
                ("panel", "/"),
                ("patient", f"/patients/{ward.patient_id}?range=7d"),
                ("device", f"/devices/{ward.device_id}"),
            ):
                await page.goto(base + path)
                found[name] = await axe_violations(page)
            await audit.close()

            # A new clinician sets up the authenticator app before the first session.
            newcomer = await browser.new_context(
                bypass_csp=True, viewport={"width": 1280, "height": 900}
            )
            page = await newcomer.new_page()
            await enter_password(page, base, NEWCOMER, then="/login/enrol")
            found["enrol"] = await axe_violations(page)
            await page.screenshot(path=artifacts / "sign-in-enrol.png")
            secret = "".join((await page.locator("#totp-secret").inner_text()).split())
            code = pyotp.TOTP(secret).now()
            await page.get_by_label("Code from your authenticator app").fill(code)
            await page.get_by_role("button", name="Turn on two-step sign-in").click()
            await page.wait_for_url(base + "/")
            assert "Dr Grace Hopper" in await page.locator(".who").inner_text()
            await newcomer.close()

            # A patient (password only: TOTP is optional for them) lands on their own page.
            patient = await browser.new_context(
                bypass_csp=True, viewport={"width": 1280, "height": 900}
            )
            page = await patient.new_page()
            await page.goto(base + "/login")
            await page.get_by_label("Username").fill(PATIENT)
            await page.get_by_label("Password").fill(PATIENT_PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(base + "/me")
            found["me"] = await axe_violations(page)
            await page.screenshot(path=artifacts / "me.png")
            await page.get_by_role("link", name="Set up two-step sign-in").click()
            await page.wait_for_url(base + "/me/two-step")
            found["me-two-step"] = await axe_violations(page)
            await patient.close()
            step("accessibility audit")
    assert found == {name: [] for name in found}


async def axe_violations(page: Page) -> list[str]:
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        """() => axe.run(document, {
            runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
            resultTypes: ["violations"],
        })"""
    )
    return [
        f"{v['id']}: {v['help']} ({', '.join(n['target'][0] for n in v['nodes'][:3])})"
        for v in result["violations"]
    ]
