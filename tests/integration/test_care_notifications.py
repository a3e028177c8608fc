"""Email notifications through a local SMTP server (aiosmtpd), on both backends: a message or
a refill decision tells the other side that something is waiting, and nothing more; quiet hours
defer it; a booked appointment schedules a reminder; a failing server is retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from medmesh.app import create_app
from medmesh.care.notifications import Notifier, NotifierSettings
from medmesh.config import Settings
from medmesh.domain.notifications import Preferences
from medmesh.events.bus import InProcessBus
from medmesh.events.model import MESSAGE, Event
from medmesh.store.database import Database
from medmesh.store.notifications import Notifications
from tests.care_fixtures import SECRET_PLACE, CareCast, care, photo, start_thread
from tests.helpers import AppClient
from tests.live_server import free_port
from tests.smtp_sink import Sink, smtp_sink

__all__ = ["care"]  # fixture, used by name


@pytest.fixture
def sink() -> AsyncIterator[Sink]:
    with smtp_sink() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
async def mail_http(database_url: str, sink: Sink) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url,
        auto_migrate=False,
        alert_check_interval_seconds=0,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_starttls=False,
        smtp_from="Clinic <no-reply@clinic.example>",
        public_base_url="https://clinic.example",
        notify_poll_seconds=0.05,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as http:
        yield http


async def _wait_for(sink: Sink, count: int) -> None:
    for _ in range(200):
        if len(sink.received) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sink.received)} emails arrived, expected {count}")


async def _email(
    http: httpx.AsyncClient, headers: dict[str, str], address: str, **extra: object
) -> None:
    answer = await http.put(
        "/api/v1/me/notifications",
        json={"email": address, "email_enabled": True, **extra},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text


async def test_a_message_is_announced_by_email_without_a_word_of_it(
    mail_http: AppClient, care: CareCast, sink: Sink
) -> None:
    http = mail_http
    await _email(http, care.clinician, "dr.test@clinic.example")
    await _email(http, care.patient, "jane@example.org")
    sent = await start_thread(
        http,
        care.world.patient_id,
        care.patient,
        subject="Wound on my left foot",
        body=f"It is red and swollen. {SECRET_PLACE}",
        files=[("foot.jpg", photo(), "image/jpeg")],
    )
    assert sent.status_code == 201
    await _wait_for(sink, 1)
    (email,) = sink.received
    assert email["To"] == "dr.test@clinic.example"
    assert email["Subject"] == "medmesh: you have a new secure message"
    text = email.as_string()
    assert "https://clinic.example/me" in text
    for secret in ("Wound", "swollen", "Acacia", "Jane", "Doe", "MRN", care.world.patient_id):
        assert secret not in text, secret
    reply = await http.post(
        f"/api/v1/threads/{sent.json()['id']}/messages",
        data={"body": "Please come in tomorrow."},
        headers=care.clinician,
    )
    assert reply.status_code == 201
    await _wait_for(sink, 2)
    assert sink.received[1]["To"] == "jane@example.org"
    assert "tomorrow" not in sink.received[1].as_string()


async def test_quiet_hours_defer_the_email_and_a_booking_schedules_a_reminder(
    mail_http: AppClient, care: CareCast, sink: Sink, database: Database
) -> None:
    http = mail_http
    now = datetime.now(UTC)
    # Quiet from an hour ago to an hour from now, in UTC: the email waits until then.
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).time()
    await _email(
        http,
        care.clinician,
        "dr.test@clinic.example",
        quiet_start=start.strftime("%H:%M"),
        quiet_end=end.strftime("%H:%M"),
    )
    await _email(http, care.patient, "jane@example.org")
    await start_thread(http, care.world.patient_id, care.patient)
    await asyncio.sleep(0.5)
    assert sink.received == []
    async with database.read() as conn:
        ((kind, status, due),) = await Notifications(conn).history(care.world.clinician_id)
    assert (kind, status) == ("message", "pending")
    assert due > now + timedelta(minutes=30)

    schedule = await http.put(
        "/api/v1/schedule",
        json={
            "timezone": "UTC",
            "hours": [
                {"day": d, "start": "00:00", "end": "23:30"}
                for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            ],
        },
        headers=care.clinician,
    )
    visit = (now + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    booked = await http.post(
        "/api/v1/appointments",
        json={
            "patient": care.world.patient_id,
            "schedule": schedule.json()["id"],
            "start": visit.isoformat(),
            "kind": "video",
        },
        headers=care.patient,
    )
    assert booked.status_code == 201, booked.text
    await _wait_for(sink, 1)  # the booking's confirmation to the patient
    assert sink.received[0]["Subject"] == "medmesh: an appointment has changed"
    async with database.read() as conn:
        history = await Notifications(conn).history(care.patient_user_id)
    reminders = [due for kind, status, due in history if kind == "appointment-reminder"]
    assert reminders == [visit - timedelta(hours=24)]
    cancelled = await http.post(
        f"/api/v1/appointments/{booked.json()['id']}/cancel", headers=care.clinician
    )
    assert cancelled.status_code == 200
    await asyncio.sleep(0.3)
    async with database.read() as conn:
        history = await Notifications(conn).history(care.patient_user_id)
    assert [k for k, _, _ in history if k == "appointment-reminder"] == []


async def test_preferences_are_checked(
    mail_http: AppClient, care: CareCast, database: Database
) -> None:
    http = mail_http
    for body, words in (
        ({"email": "not an address"}, "not an email address"),
        ({"email": None, "email_enabled": True}, "give an email address"),
        ({"email": "a@example.org", "quiet_start": "22:00"}, "both quiet_start and quiet_end"),
        ({"email": "a@example.org", "quiet_start": "25:00", "quiet_end": "07:00"}, "time of day"),
        ({"email": "a@example.org", "timezone": "Moon/Base"}, "IANA"),
    ):
        answer = await http.put("/api/v1/me/notifications", json=body, headers=care.patient)
        assert answer.status_code == 400, (body, answer.text)
        assert words in answer.json()["issue"][0]["diagnostics"]
    assert (await http.get("/api/v1/me/notifications", headers=care.patient)).json()[
        "email"
    ] is None


async def test_a_failing_mail_server_is_retried_later(database: Database, care: CareCast) -> None:
    bus = InProcessBus()
    settings = NotifierSettings(
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        sender="x@clinic.example",
        sign_in_url="https://clinic.example/me",
    )
    notifier = Notifier(database, bus, settings)
    async with database.write() as conn:
        await Notifications(conn).set_preferences(
            Preferences(care.world.clinician_id, "dr@clinic.example", True, None, None, "UTC"),
            datetime.now(UTC),
        )
    await notifier.on_event(Event(MESSAGE, care.world.patient_id, {"side": "patient"}))
    assert await notifier.send_due() == 0
    async with database.read() as conn:
        ((kind, status, due),) = await Notifications(conn).history(care.world.clinician_id)
    assert (kind, status) == ("message", "pending")
    assert due > datetime.now(UTC)  # backed off
