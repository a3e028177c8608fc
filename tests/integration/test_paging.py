"""Paging end to end on loopback, on both backends: a critical reading → the on-call
clinician's mailbox (aiosmtpd) gets a page without health data → its link, after sign-in with
TOTP, acknowledges in one click and escalation stops; unanswered, the next in the chain is
paged at the configured delay (a frozen clock); a failing SMTP server falls through to an
apprise json:// channel; a storm of alerts is one page; a used link does nothing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.alerts import AlertStatus
from medmesh.paging.pager import Pager
from medmesh.paging.repository import Pages
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.testing import FrozenClock
from medmesh.wiring import pager_settings
from tests.accounts_fixtures import Person, csrf_of, make_clinician, sign_in
from tests.conftest import ASSIGNED_SINCE, World, make_world
from tests.helpers import AppClient, reading
from tests.live_server import free_port
from tests.page_receiver import PageReceiver, page_receiver
from tests.smtp_sink import Sink, smtp_sink, words_of_page

__all__ = ["page_receiver"]  # fixture, used by name

LINK = re.compile(r"(https://clinic\.example)(/page/[A-Z0-9]+)")


@dataclass
class Ward:
    world: World
    oncall: Person
    lead: Person
    clock: FrozenClock
    pager: Pager
    http: AppClient
    admin: dict[str, str]
    headers: dict[str, dict[str, str]]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


async def _token(database: Database, person: Person) -> dict[str, str]:
    token = await provisioning.issue_user_token(
        database, user_id=person.user_id, scopes="user/*.cruds"
    )
    return {"Authorization": f"Bearer {token}"}


async def _ward(database: Database, database_url: str, smtp_port: int) -> AsyncIterator[Ward]:
    settings = Settings(
        database_url=database_url,
        auto_migrate=False,
        alert_check_interval_seconds=0,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_starttls=False,
        smtp_from="Clinic <no-reply@clinic.example>",
        public_base_url="https://clinic.example",
        paging_enabled=False,  # the test runs its own pager, on a frozen clock
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as http:
        world = await make_world(database)
        oncall = await make_clinician(database, "dr.oncall", "Dr On Call")
        lead = await make_clinician(database, "dr.lead", "Dr Lead")
        for person in (oncall, lead):
            await provisioning.add_to_care_team(
                database, world.patient_id, person.user_id, role="nurse", added_by="test"
            )
        admin_account = await provisioning.create_user(
            database,
            username="admin",
            display_name="Admin",
            role=Role.ORG_ADMIN,
            password="correct horse battery",
        )
        admin = await _token(database, Person(admin_account.id, "admin", "", None))
        clock = FrozenClock(datetime.now(UTC))
        services = app.state.services
        pager = Pager(database, services.bus, pager_settings(settings), now=clock)
        await pager.start()
        headers = {p.username: await _token(database, p) for p in (oncall, lead)}
        try:
            yield Ward(world, oncall, lead, clock, pager, http, admin, headers)
        finally:
            await pager.stop()


@pytest.fixture
async def ward(database: Database, database_url: str, sink: Sink) -> AsyncIterator[Ward]:
    async for made in _ward(database, database_url, sink.port):
        yield made


async def _roster_and_chain(ward: Ward) -> None:
    """Team "nights": dr.lead covers it now (an override); the chain is on-call clinician
    (the plan's primary) → whoever covers nights, critical after 5 minutes."""
    now = datetime.now(UTC)
    team = await ward.http.put(
        "/api/v1/oncall/teams/nights",
        json={
            "timezone": "Europe/Berlin",
            "lead": ward.lead.user_id,
            "overrides": [
                {
                    "user": ward.lead.user_id,
                    "start": (now - timedelta(hours=1)).isoformat(),
                    "end": (now + timedelta(hours=11)).isoformat(),
                }
            ],
        },
        headers=ward.admin,
    )
    assert team.status_code == 200, team.text
    assert team.json()["on_call_now"] == [ward.lead.user_id]
    plan = await ward.http.put(
        f"/api/v1/patients/{ward.world.patient_id}/care-plan",
        json={
            "primary_clinician": ward.oncall.user_id,
            "escalation_chain": [
                {"to": "primary", "after": {"critical": 5}},
                {"to": "team", "ref": team.json()["id"]},
            ],
        },
        headers=ward.world.reader_headers,
    )
    assert plan.status_code == 200, plan.text


async def _channel(ward: Ward, who: Person, kind: str, target: str) -> None:
    added = await ward.http.post(
        "/api/v1/me/paging-channels",
        json={"kind": kind, "target": target},
        headers=ward.headers[who.username],
    )
    assert added.status_code == 201, added.text


async def _critical_reading(ward: Ward, message_id: str = "g-1") -> str:
    """A glucose of 40 mg/dL: critical low. Returns the alert's id."""
    answer = await ward.http.post(
        "/ingest/v1/readings",
        json={
            "readings": [reading(message_id, "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))]
        },
        headers=ward.world.device_headers,
    )
    assert answer.status_code == 202, answer.text
    await ward.http.settled()
    for _ in range(100):
        async with _db(ward).read() as conn:
            found = await Alerts(conn).search(
                ward.world.patient_id, (AlertStatus.OPEN,), 10, 0, within=None
            )
            paged = found and await Pages(conn).times_paged(found[0].id)
        if found and paged and paged[0]:
            return found[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no page was made for the critical reading")


def _db(ward: Ward) -> Database:
    db: Database = ward.http.app.state.services.database
    return db


async def _wait(sink: Sink, count: int) -> None:
    for _ in range(200):
        if len(sink.received) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sink.received)} pages arrived by e-mail, expected {count}")


async def _tick(ward: Ward, by: timedelta = timedelta(0)) -> None:
    ward.clock.advance(by)
    await ward.pager.tick()


async def test_the_on_call_clinician_acknowledges_from_the_page_and_escalation_stops(
    ward: Ward, sink: Sink
) -> None:
    await _roster_and_chain(ward)
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await _channel(ward, ward.lead, "email", "lead@clinic.example")
    alert_id = await _critical_reading(ward)
    await _tick(ward, timedelta(seconds=6))  # past the grouping hold
    await _wait(sink, 1)
    (mail,) = sink.received
    assert mail["To"] == "oncall@clinic.example"
    text = mail.as_string()
    assert "A critical alert for one of your patients is waiting" in text
    for secret in ("Glucose", "glucose", "40", "Jane", "Doe", "MRN", ward.world.patient_id):
        assert secret not in words_of_page(mail).replace(str(alert_id), ""), secret
    found = LINK.search(text)
    assert found, text
    path = found.group(2)

    # Not signed in: the link asks for sign-in and does nothing by itself.
    first = await ward.http.get(path)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    await sign_in(ward.http, ward.oncall)  # password, then the TOTP code
    opened = await ward.http.get(path)
    assert opened.status_code == 200, opened.text
    assert "Low glucose" in opened.text
    async with _db(ward).read() as conn:
        assert (await Alerts(conn).get(alert_id)).status is AlertStatus.OPEN
    done = await ward.http.post(f"{path}/acknowledge", data={"csrf_token": csrf_of(opened.text)})
    assert done.status_code == 200, done.text
    assert "acknowledged 1 alert from your email page" in done.text
    async with _db(ward).read() as conn:
        alert = await Alerts(conn).get(alert_id)
    assert alert.status is AlertStatus.ACKNOWLEDGED
    assert alert.acknowledged_by == "Dr On Call (paged by email)"

    # Escalation stops: long past the delay, nobody else is paged.
    await _tick(ward, timedelta(minutes=30))
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1
    # The used link does nothing again.
    again = await ward.http.get(path)
    assert again.status_code == 410
    assert "does nothing by itself" in again.text


async def test_an_unanswered_page_moves_up_the_chain_at_the_configured_delay(
    ward: Ward, sink: Sink
) -> None:
    await _roster_and_chain(ward)
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await _channel(ward, ward.lead, "email", "lead@clinic.example")
    alert_id = await _critical_reading(ward)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    await _tick(ward, timedelta(minutes=4))  # within the 5 minutes: nobody else
    await asyncio.sleep(0.2)
    assert [m["To"] for m in sink.received] == ["oncall@clinic.example"]
    await _tick(ward, timedelta(minutes=1, seconds=1))  # the page escalates
    await _tick(ward, timedelta(seconds=6))  # the next page's hold
    await _wait(sink, 2)
    assert sink.received[1]["To"] == "lead@clinic.example"
    async with _db(ward).read() as conn:
        assert (await Alerts(conn).get(alert_id)).escalation_level == 1


async def test_a_failing_mail_server_falls_through_to_the_next_channel(
    database: Database, database_url: str, page_receiver: PageReceiver
) -> None:
    async for ward in _ward(database, database_url, free_port()):  # nobody listens there
        await _roster_and_chain(ward)
        await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
        await _channel(ward, ward.oncall, "apprise", page_receiver.url("json"))
        await _critical_reading(ward)
        await _tick(ward, timedelta(seconds=6))
        (body,) = await page_receiver.wait_for(1)
        sent = json.loads(body)
        assert "A critical alert for one of your patients is waiting" in sent["message"]
        assert "/page/" in sent["message"]
        async with database.read() as conn:
            (page,) = await Pages(conn).history(ward.oncall.user_id)
            outcomes = [(d.channel_kind, d.outcome) for d in await Pages(conn).deliveries(page.id)]
        assert outcomes == [("email", "failed"), ("apprise", "sent")]
        assert page.status == "sent"


async def _another_patient(
    database: Database, ward: Ward, identifier: str
) -> tuple[str, dict[str, str]]:
    """A patient with a device, on the care team of the ward's clinician and of the on-call
    clinician: the patient and device of `make_world` without a clinician account of its own
    (hashing that account's password was most of the time of a fifty-patient test)."""
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier=identifier
    )
    device = await provisioning.register_device(database, display_name="Cuff")
    await provisioning.assign_device(database, device.device_id, patient.id, ASSIGNED_SINCE)
    for user_id in (ward.world.clinician_id, ward.oncall.user_id):
        await provisioning.add_to_care_team(database, patient.id, user_id, added_by="test")
    return patient.id, {"Authorization": f"Bearer {device.secret}"}


async def test_fifty_alerts_in_a_minute_are_one_page_per_person(
    ward: Ward, sink: Sink, database: Database
) -> None:
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    plan = await ward.http.put(
        f"/api/v1/patients/{ward.world.patient_id}/care-plan",
        json={"primary_clinician": ward.oncall.user_id},
        headers=ward.world.reader_headers,
    )
    assert plan.status_code == 200
    # Fifty patients of the same clinician, each with a critical reading, within a minute.
    for i in range(50):
        patient_id, device_headers = (
            (ward.world.patient_id, ward.world.device_headers)
            if i == 0
            else await _another_patient(database, ward, f"MRN-S{i}")
        )
        if i:
            await ward.http.put(
                f"/api/v1/patients/{patient_id}/care-plan",
                json={"primary_clinician": ward.oncall.user_id},
                headers=ward.world.reader_headers,
            )
        answer = await ward.http.post(
            "/ingest/v1/readings",
            json={
                "readings": [reading(f"s-{i}", "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))]
            },
            headers=device_headers,
        )
        assert answer.status_code == 202
        ward.clock.advance(timedelta(seconds=1))
        await ward.http.settled()
    await asyncio.sleep(0.5)
    await _tick(ward, timedelta(seconds=6))
    await asyncio.sleep(0.5)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    await asyncio.sleep(0.3)
    # One page: it went out after the hold saying how many were waiting then; the alerts
    # after it joined it (its link opens all of them, its escalation covers all of them).
    assert len(sink.received) == 1
    assert re.search(r"\b\d+ alerts for your patients are waiting", sink.received[0].as_string())
    async with database.read() as conn:
        (page,) = await Pages(conn).history(ward.oncall.user_id)
        assert len(await Pages(conn).alert_ids(page.id)) == 50


async def test_channels_are_checked_when_saved(ward: Ward, page_receiver: PageReceiver) -> None:
    headers = ward.headers["dr.oncall"]
    for body, words in (
        ({"kind": "email", "target": "not an address"}, "not an e-mail address"),
        ({"kind": "apprise", "target": "nonsense://what"}, "apprise understands"),
        (
            {"kind": "apprise", "target": f"json://127.0.0.1:{free_port()}/x", "test": True},
            "did not go through",
        ),
    ):
        answer = await ward.http.post("/api/v1/me/paging-channels", json=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert words in answer.json()["issue"][0]["diagnostics"]
    good = await ward.http.post(
        "/api/v1/me/paging-channels",
        json={"kind": "apprise", "target": page_receiver.url("form"), "test": True},
        headers=headers,
    )
    assert good.status_code == 201, good.text
    assert b"test" in (await page_receiver.wait_for(1))[0]
    listed = await ward.http.get("/api/v1/me/paging-channels", headers=headers)
    assert [c["target"] for c in listed.json()["channels"]] == [
        f"form://127.0.0.1:{page_receiver.port}"
    ]


async def test_rosters_show_gaps_are_for_admins_and_erasure_removes_a_patients_pages(
    ward: Ward, sink: Sink, database: Database
) -> None:
    # A weekly rotation that leaves Sunday 08:00-20:00 uncovered (Europe/Berlin).
    weekly = [
        {"user": ward.oncall.user_id, "weekday": d, "start": "08:00", "end": "20:00"}
        for d in range(6)
    ] + [
        {"user": ward.lead.user_id, "weekday": d, "start": "20:00", "end": "08:00"}
        for d in range(7)
    ]
    body = {"timezone": "Europe/Berlin", "lead": ward.lead.user_id, "weekly": weekly}
    refused = await ward.http.put(
        "/api/v1/oncall/teams/days", json=body, headers=ward.headers["dr.oncall"]
    )
    assert refused.status_code == 403
    saved = await ward.http.put("/api/v1/oncall/teams/days", json=body, headers=ward.admin)
    assert saved.status_code == 200, saved.text
    shown = await ward.http.get(
        "/api/v1/oncall/teams/days",
        params={"start": "2026-12-07", "days": 7},  # Monday to Sunday
        headers=ward.headers["dr.lead"],
    )
    assert shown.json()["gaps"] == [
        {"start": "2026-12-13T07:00:00Z", "end": "2026-12-13T19:00:00Z"}
    ]
    bad = await ward.http.put(
        "/api/v1/oncall/teams/days",
        json={**body, "timezone": "Mars/Olympus"},
        headers=ward.admin,
    )
    assert bad.status_code == 400 and "IANA" in bad.text

    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await ward.http.put(
        f"/api/v1/patients/{ward.world.patient_id}/care-plan",
        json={"primary_clinician": ward.oncall.user_id},
        headers=ward.world.reader_headers,
    )
    await _critical_reading(ward)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    erased = await ward.http.post(
        f"/api/v1/patients/{ward.world.patient_id}/erasure",
        json={"reason": "asked to"},
        headers=ward.admin,
    )
    assert erased.status_code == 200, erased.text
    async with database.read() as conn:
        assert await Pages(conn).history(ward.oncall.user_id) == []


async def test_quiet_hours_hold_a_warning_page_but_not_a_critical_one(
    ward: Ward, sink: Sink, database: Database
) -> None:
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    now = datetime.now(UTC)
    quiet = await ward.http.put(
        "/api/v1/me/notifications",
        json={
            "email": "oncall@clinic.example",
            "quiet_start": (now - timedelta(hours=1)).strftime("%H:%M"),
            "quiet_end": (now + timedelta(hours=2)).strftime("%H:%M"),
        },
        headers=ward.headers["dr.oncall"],
    )
    assert quiet.status_code == 200, quiet.text
    await ward.http.put(
        f"/api/v1/patients/{ward.world.patient_id}/care-plan",
        json={"primary_clinician": ward.oncall.user_id},
        headers=ward.world.reader_headers,
    )
    warning = await ward.http.post(
        "/ingest/v1/readings",
        json={"readings": [reading("w-1", "blood-glucose", 62, "mg/dL", at=now)]},
        headers=ward.world.device_headers,
    )
    assert warning.status_code == 202
    await ward.http.settled()
    await asyncio.sleep(0.3)
    await _tick(ward, timedelta(minutes=5))
    await asyncio.sleep(0.3)
    assert sink.received == []  # a warning waits for the end of the quiet hours
    async with database.read() as conn:
        (held,) = await Pages(conn).history(ward.oncall.user_id)
    assert held.status == "held" and held.due_at > now + timedelta(hours=1)

    other = await make_world(database, "MRN-Q")
    await provisioning.add_to_care_team(
        database, other.patient_id, ward.oncall.user_id, added_by="test"
    )
    await ward.http.put(
        f"/api/v1/patients/{other.patient_id}/care-plan",
        json={"primary_clinician": ward.oncall.user_id},
        headers=other.reader_headers,
    )
    critical = await ward.http.post(
        "/ingest/v1/readings",
        json={"readings": [reading("c-1", "blood-glucose", 40, "mg/dL", at=datetime.now(UTC))]},
        headers=other.device_headers,
    )
    assert critical.status_code == 202
    await ward.http.settled()
    await asyncio.sleep(0.3)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)  # critical pages at any hour
    assert "critical" in sink.received[0]["Subject"]


async def test_a_snooze_holds_until_it_ends_and_then_pages_again(
    ward: Ward, sink: Sink, database: Database
) -> None:
    await _roster_and_chain(ward)
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await _channel(ward, ward.lead, "email", "lead@clinic.example")
    alert_id = await _critical_reading(ward)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    found = LINK.search(sink.received[0].as_string())
    assert found
    path = found.group(2)
    await sign_in(ward.http, ward.oncall)
    opened = await ward.http.get(path)
    snoozed = await ward.http.post(
        f"{path}/snooze",
        data={"csrf_token": csrf_of(opened.text), "reason": "eating now", "minutes": "30"},
    )
    assert snoozed.status_code == 200, snoozed.text
    assert "snoozed until" in snoozed.text
    async with database.read() as conn:
        assert (await Alerts(conn).get(alert_id)).status is AlertStatus.OPEN
    # Past the 5-minute escalation delay but inside the snooze: nobody is paged.
    await _tick(ward, timedelta(minutes=10))
    await _tick(ward, timedelta(seconds=6))
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1
    # The snooze ends: the primary is paged again.
    await _tick(ward, timedelta(minutes=21))
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 2)
    assert sink.received[1]["To"] == "oncall@clinic.example"


async def _glucose(ward: Ward, message_id: str, value: float) -> None:
    answer = await ward.http.post(
        "/ingest/v1/readings",
        json={
            "readings": [reading(message_id, "blood-glucose", value, "mg/dL", at=datetime.now(UTC))]
        },
        headers=ward.world.device_headers,
    )
    assert answer.status_code == 202, answer.text
    await ward.http.settled()


async def _times_paged(ward: Ward, alert_id: str, times: int) -> None:
    for _ in range(100):
        async with _db(ward).read() as conn:
            if (await Pages(conn).times_paged(alert_id))[0] >= times:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the alert was not paged {times} times")


async def test_a_snoozed_alert_pages_again_before_the_snooze_ends_when_it_gets_worse(
    ward: Ward, sink: Sink, database: Database
) -> None:
    await _roster_and_chain(ward)
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await _glucose(ward, "g-low", 65)  # low glucose: a warning
    async with database.read() as conn:
        (alert,) = await Alerts(conn).search(
            ward.world.patient_id, (AlertStatus.OPEN,), 10, 0, within=None
        )
    await _times_paged(ward, alert.id, 1)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    assert "An alert for one of your patients" in sink.received[0].as_string()
    found = LINK.search(sink.received[0].as_string())
    assert found
    await sign_in(ward.http, ward.oncall)
    opened = await ward.http.get(found.group(2))
    snoozed = await ward.http.post(
        f"{found.group(2)}/snooze",
        data={"csrf_token": csrf_of(opened.text), "reason": "eating now", "minutes": "60"},
    )
    assert snoozed.status_code == 200, snoozed.text
    await _tick(ward, timedelta(minutes=10))
    assert len(sink.received) == 1  # held by the snooze
    # Ten minutes into an hour's snooze the value worsens (40 mg/dL: critical): paged now.
    await _glucose(ward, "g-worse", 40)
    await _times_paged(ward, alert.id, 2)
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 2)
    assert sink.received[1]["To"] == "oncall@clinic.example"
    assert "A critical alert for one of your patients" in sink.received[1].as_string()
    async with database.read() as conn:
        assert (await Alerts(conn).get(alert.id)).severity.value == "critical"
