"""The clinician dashboard over HTTP, in-process, on both backends: sign-in (password and
TOTP code; the details are in test_accounts.py), the session's limits, CSRF, the panel's
order, alert actions, chart series and the device page. The real browser checks are in
tests/e2e."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from medmesh import provisioning
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.http.deps import WallClock, provide
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.schema import care_team_members, users
from medmesh.testing import ManualTimer
from medmesh.web import session
from tests.accounts_fixtures import (
    STAFF_PASSWORD,
    Person,
    make_clinician,
    sign_in,
    submit_password,
)
from tests.conftest import World
from tests.helpers import stamp


@pytest.fixture
async def http(
    database_url: str, world: World, timer: ManualTimer
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url, auto_migrate=False))
    provide(app, WallClock, timer)  # the web UI's clock, moved by the tests that need it
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer(datetime.now(UTC).timestamp())


@pytest.fixture
async def clinician(database: Database, world: World) -> Person:
    """A clinician on the world patient's care team (the panel lists their patients)."""
    person = await make_clinician(database, "dr.test", "dr test")
    await provisioning.add_to_care_team(database, world.patient_id, person.user_id, added_by="test")
    return person


async def add_alert(
    database: Database,
    patient_id: str,
    severity: Severity,
    title: str = "SpO2 low",
    status: AlertStatus = AlertStatus.OPEN,
) -> Alert:
    now = datetime.now(UTC)
    alert = Alert(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        rule=f"test-{uuid.uuid4().hex[:6]}",
        dedupe_key=str(uuid.uuid4()),
        severity=severity,
        status=status,
        title=title,
        detail="a test alert",
        device_id=None,
        observation_id=None,
        opened_at=now,
        last_triggered_at=now,
        trigger_count=1,
    )
    async with database.write() as conn:
        await Alerts(conn).add(alert)
    return alert


# --- signing in ----------------------------------------------------------------------------


async def test_every_page_sends_a_visitor_without_a_session_to_sign_in(
    http: httpx.AsyncClient, world: World
) -> None:
    for path in ("/", f"/patients/{world.patient_id}", f"/devices/{world.device_id}"):
        response = await http.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login"
    stream = await http.get("/dashboard/events", headers={"Accept": "text/event-stream"})
    assert stream.status_code == 401
    fragment = await http.get("/panel/rows?page=1", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"] == "/login"


async def test_a_wrong_password_is_refused(http: httpx.AsyncClient, clinician: Person) -> None:
    response = await submit_password(http, clinician.username, "not the password")
    assert response.status_code == 401
    assert "not right" in response.text
    assert (await http.get("/")).status_code == 303


async def test_signing_in_sets_a_strict_http_only_cookie_with_ids_only(
    http: httpx.AsyncClient, clinician: Person
) -> None:
    await sign_in(http, clinician)
    cookie = http.cookies[session.SESSION_COOKIE]
    assert STAFF_PASSWORD not in cookie and (clinician.totp_secret or "-") not in cookie
    assert (await http.get("/")).status_code == 200


async def test_a_deleted_account_ends_its_session(
    http: httpx.AsyncClient, clinician: Person, database: Database
) -> None:
    await sign_in(http, clinician)
    async with database.write() as conn:
        await conn.execute(
            care_team_members.delete().where(care_team_members.c.user_id == clinician.user_id)
        )
        await conn.execute(users.delete().where(users.c.id == clinician.user_id))
    response = await http.get("/")
    assert response.headers["location"] == "/login?expired=1"


async def test_the_session_ends_after_inactivity_but_not_while_in_use(
    http: httpx.AsyncClient, world: World, timer: ManualTimer, clinician: Person
) -> None:
    await sign_in(http, clinician)
    timer.advance(10 * 60)
    assert (await http.get("/")).status_code == 200  # the clinician's own request
    timer.advance(10 * 60)
    assert (await http.get("/panel/rows?page=1")).status_code == 200  # a live refresh
    timer.advance(6 * 60)  # 16 minutes after the last request of the clinician's own
    assert (await http.get("/panel/rows?page=1")).status_code == 303
    assert (await http.get("/")).headers["location"] == "/login"  # the session was cleared


async def test_the_page_reports_activity_that_keeps_the_session(
    http: httpx.AsyncClient, world: World, timer: ManualTimer, clinician: Person
) -> None:
    csrf = await sign_in(http, clinician)
    timer.advance(14 * 60)
    assert (await http.post("/session/activity")).status_code == 403
    reported = await http.post("/session/activity", headers={"X-CSRF-Token": csrf})
    assert reported.status_code == 204
    timer.advance(14 * 60)
    assert (await http.get("/")).status_code == 200
    timer.advance(16 * 60)
    expired = await http.post(
        "/session/activity", headers={"X-CSRF-Token": csrf, "Accept": "application/json"}
    )
    assert expired.status_code == 401


async def test_signing_out_ends_the_session(
    http: httpx.AsyncClient, world: World, clinician: Person
) -> None:
    csrf = await sign_in(http, clinician)
    response = await http.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert (await http.get("/")).status_code == 303


# --- CSRF ----------------------------------------------------------------------------------


async def test_sign_in_without_the_form_token_is_refused(
    http: httpx.AsyncClient, clinician: Person
) -> None:
    await http.get("/login")
    response = await http.post(
        "/login", data={"username": clinician.username, "password": clinician.password}
    )
    assert response.status_code == 403


async def test_state_changing_requests_need_the_sessions_csrf_token(
    http: httpx.AsyncClient, world: World, database: Database, clinician: Person
) -> None:
    alert = await add_alert(database, world.patient_id, Severity.URGENT)
    csrf = await sign_in(http, clinician)
    path = f"/alerts/{alert.id}/acknowledge"
    assert (await http.post(path)).status_code == 403
    assert (await http.post(path, data={"csrf_token": "forged"})).status_code == 403
    assert (await http.post("/logout")).status_code == 403
    async with database.read() as conn:
        assert (await Alerts(conn).get(alert.id)).status is AlertStatus.OPEN
    answer = await http.post(path, headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert answer.status_code == 200


# --- the panel -----------------------------------------------------------------------------


async def test_the_panel_lists_the_most_urgent_patients_first(
    http: httpx.AsyncClient, world: World, database: Database, clinician: Person
) -> None:
    made = {}
    for family in ("Able", "Brook", "Cole", "Dunn"):
        made[family] = await provisioning.create_patient(
            database, family=family, given="Test", identifier=f"MRN-{family}"
        )
        await provisioning.add_to_care_team(
            database, made[family].id, clinician.user_id, added_by="t"
        )
    await add_alert(database, made["Dunn"].id, Severity.CRITICAL)
    await add_alert(database, made["Brook"].id, Severity.WARNING)
    await add_alert(database, made["Brook"].id, Severity.WARNING, title="Glucose high")
    await add_alert(database, made["Cole"].id, Severity.WARNING)
    await add_alert(database, made["Able"].id, Severity.URGENT, status=AlertStatus.RESOLVED)
    await sign_in(http, clinician)
    html = (await http.get("/")).text
    order = re.findall(r'class="patient-name" href="/patients/[^"]+">([^,]+),', html)
    assert order == ["Dunn", "Brook", "Cole", "Able", "Doe"]
    assert "Critical" in html and "2 active" in html


async def test_rows_are_refreshed_by_id_with_their_latest_vitals(
    http: httpx.AsyncClient, world: World, clinician: Person
) -> None:
    await http.post(
        "/ingest/v1/readings",
        json={
            "readings": [
                {
                    "id": "bp-1",
                    "type": "blood-pressure",
                    "time": stamp(datetime.now(UTC) - timedelta(minutes=1)),
                    "value": {"systolic": 141, "diastolic": 92},
                    "unit": "mm[Hg]",
                }
            ]
        },
        headers=world.device_headers,
    )
    await sign_in(http, clinician)
    response = await http.get(f"/panel/rows?ids={world.patient_id},unknown")
    assert response.status_code == 200
    assert f'id="row-{world.patient_id}"' in response.text and 'hx-swap-oob="true"' in response.text
    assert "141/92" in response.text


# --- a patient -----------------------------------------------------------------------------


async def test_the_patient_page_charts_readings_and_sends_new_ones(
    http: httpx.AsyncClient, world: World, clinician: Person
) -> None:
    now = datetime.now(UTC)
    readings = [
        {
            "id": f"spo2-{i}",
            "type": "oxygen-saturation",
            "time": stamp(now - timedelta(minutes=30 - i)),
            "value": 95 + i % 3,
            "unit": "%",
        }
        for i in range(30)
    ]
    await http.post(
        "/ingest/v1/readings", json={"readings": readings}, headers=world.device_headers
    )
    await sign_in(http, clinician)
    page = await http.get(f"/patients/{world.patient_id}?range=6h")
    assert page.status_code == 200
    config = orjson.loads(
        re.search(r'id="chart-data">(.*?)</script>', page.text, re.S).group(1)  # type: ignore[union-attr]
    )
    spo2 = next(v for v in config["vitals"] if v["key"] == "spo2")
    assert len(spo2["data"]["x"]) == 30 and spo2["data"]["series"]["spo2"]["mean"][-1] == 97
    assert 'data-points="30"' in page.text

    late = {
        "id": "spo2-new",
        "type": "oxygen-saturation",
        "time": stamp(now),
        "value": 91,
        "unit": "%",
    }
    await http.post("/ingest/v1/readings", json={"readings": [late]}, headers=world.device_headers)
    fresh = await http.get(
        f"/patients/{world.patient_id}/series",
        params={"range": "6h", "since": str(config["now"])},
        headers={"Accept": "application/json"},
    )
    new = fresh.json()["vitals"]["spo2"]
    assert new["series"]["spo2"]["mean"][-1] == 91
    assert fresh.json()["now"] >= config["now"]


async def test_every_range_renders_with_at_most_500_points_per_series(
    http: httpx.AsyncClient, world: World, clinician: Person
) -> None:
    await sign_in(http, clinician)
    for key in ("6h", "24h", "7d", "30d", "90d", "bogus"):
        response = await http.get(f"/patients/{world.patient_id}?range={key}")
        assert response.status_code == 200, key
    assert (await http.get("/patients/no-such-patient")).status_code == 404


async def test_alerts_are_acknowledged_and_resolved_as_the_signed_in_clinician(
    http: httpx.AsyncClient, world: World, database: Database, clinician: Person
) -> None:
    alert = await add_alert(database, world.patient_id, Severity.CRITICAL)
    csrf = await sign_in(http, clinician)
    response = await http.post(f"/alerts/{alert.id}/acknowledge", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == f"/patients/{world.patient_id}#alert-{alert.id}"
    again = await http.post(f"/alerts/{alert.id}/acknowledge", data={"csrf_token": csrf})
    assert again.status_code == 409
    no_reason = await http.post(f"/alerts/{alert.id}/resolve", data={"csrf_token": csrf})
    assert no_reason.status_code == 400
    fragment = await http.post(
        f"/alerts/{alert.id}/resolve",
        data={"csrf_token": csrf, "reason": "probe re-seated"},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200 and 'id="alert-history"' in fragment.text
    async with database.read() as conn:
        stored = await Alerts(conn).get(alert.id)
    assert stored.status is AlertStatus.RESOLVED
    assert stored.acknowledged_by == "dr test" and stored.resolved_by == "dr test"
    assert stored.resolution == "probe re-seated"


# --- a device ------------------------------------------------------------------------------


async def test_the_device_page_shows_status_patient_and_refused_messages(
    http: httpx.AsyncClient, world: World, database: Database, clinician: Person
) -> None:
    async with database.write() as conn:
        await DeviceStatuses(conn).report(
            world.device_id, datetime.now(UTC), online=True, battery_percent=12, firmware="2.4.1"
        )
    bad = {
        "id": "bad-1",
        "type": "heart-rate",
        "time": stamp(datetime.now(UTC)),
        "value": 999,
        "unit": "/min",
    }
    await http.post("/ingest/v1/readings", json={"readings": [bad]}, headers=world.device_headers)
    await sign_in(http, clinician)
    html = (await http.get(f"/devices/{world.device_id}")).text
    assert "Online" in html and "12 %" in html and "Low battery" in html and "2.4.1" in html
    assert f'href="/patients/{world.patient_id}"' in html
    assert "<strong>1</strong> message refused" in html and "implausible-value" in html


# --- privacy -------------------------------------------------------------------------------


async def test_health_data_stays_out_of_urls_and_logs(
    http: httpx.AsyncClient,
    world: World,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    clinician: Person,
) -> None:
    caplog.set_level(logging.INFO)  # what a deployment logs (aiosqlite's DEBUG shows SQL values)
    await add_alert(database, world.patient_id, Severity.CRITICAL, title="SpO2 83 %")
    csrf = await sign_in(http, clinician)
    pages = [
        (await http.get(path)).text
        for path in ("/", f"/patients/{world.patient_id}", f"/devices/{world.device_id}")
    ]
    await http.post("/logout", data={"csrf_token": csrf})
    allowed = re.compile(
        r"^(/|/login|/logout|/inbox|/rpm|/rosters|/dashboard/events|/static/[\w./-]+|/\?page=\d+|#|data:,"
        r"|/(patients|devices)/[0-9a-f-]{36}(/alerts|/events)?(\?range=\w+)?"
        # the care section's forms and links: ids only
        r"|/patients/[0-9a-f-]{36}/medications(/[0-9a-f-]{36}/stop)?|/inbox/threads/[0-9a-f-]{36}"
        # imaging: a study's viewer, ids only
        r"|/patients/[0-9a-f-]{36}/imaging/[0-9a-f-]{36})$"
    )
    for html in pages:
        for url in re.findall(r'(?:href|action|hx-get|hx-post|sse-connect)="([^"]*)"', html):
            url = re.sub(r"#.*$", "", url) or "#"
            assert allowed.match(url) or url.startswith(("/alerts/", "/panel/rows?page=")), url
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("Doe", "Jane", "SpO2 83", "MRN-1", STAFF_PASSWORD):
        assert secret not in logged
