"""The visit's signalling WebSocket against a real server (uvicorn, SQLite) and a real
WebSocket client (`websockets`), signed in through the web form: too early, after the end,
without a session and from another site each get a clear refusal and join nothing; a dropped
socket frees the seat cleanly, tells the other side, and the same tab comes back into the
call; the server relays only after admission."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
from pypdf import PdfReader
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.domain.appointments import Appointment, AppointmentStatus, Schedule, VisitKind
from medmesh.store import migrate
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.database import Database
from medmesh.store.visits import TimeEntries
from medmesh.web.session import SESSION_COOKIE
from tests.accounts_fixtures import csrf_of
from tests.live_server import LiveServer, live_server

PASSWORD = "a long walk by the river at dawn"


async def _provision(url: str) -> dict[str, Any]:
    database = Database(url)
    await migrate.upgrade(database)
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="M1"
    )
    ada = await provisioning.create_user(
        database, username="ada", display_name="Dr Ada", role=Role.CLINICIAN, password=PASSWORD
    )
    await provisioning.add_to_care_team(database, patient.id, ada.id, added_by="test")
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, "ada", secret)
    await provisioning.create_user(
        database,
        username="jane",
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PASSWORD,
        patient_id=patient.id,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    schedule = Schedule(
        str(uuid.uuid4()), ada.id, "Dr Ada", "UTC", 30, (VisitKind.VIDEO,), (), 30, 0, now
    )
    ids = {}
    async with database.write() as conn:
        await Schedules(conn).put(schedule)
        for name, start in (
            ("now", now - timedelta(minutes=1)),
            ("later", now + timedelta(hours=2)),
            ("past", now - timedelta(hours=2)),
        ):
            appointment = Appointment(
                str(uuid.uuid4()),
                schedule.id,
                ada.id,
                "Dr Ada",
                patient.id,
                start,
                start + timedelta(minutes=30),
                VisitKind.VIDEO,
                AppointmentStatus.BOOKED,
                None,
                now,
                ada.id,
            )
            await Appointments(conn).book(appointment)
            ids[name] = appointment.id
    await database.dispose()
    return {"secret": secret, "patient": patient.id, **ids}


async def _sign_in(base: str, username: str, secret: str | None = None) -> str:
    """The session cookie of a person signed in through the web form."""
    async with httpx.AsyncClient(base_url=base) as client:
        form = await client.get("/login")
        answer = await client.post(
            "/login",
            data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        assert answer.status_code == 303, answer.text
        if secret is not None:
            code_form = await client.get("/login/code")
            answer = await client.post(
                "/login/code",
                data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf_of(code_form.text)},
            )
            assert answer.status_code == 303, answer.text
        return str(client.cookies[SESSION_COOKIE])


@pytest.fixture
async def server(tmp_path: Any) -> AsyncIterator[tuple[dict[str, Any], LiveServer]]:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    cast = await _provision(url)
    with live_server(url, tmp_path / "server.log") as running:
        yield cast, running


def _open(
    server: LiveServer, appointment: str, tab: str, cookie: str | None, origin: str | None = None
) -> Any:
    headers = {"Origin": origin or server.base_url}
    if cookie is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    url = server.base_url.replace("http://", "ws://") + f"/visits/{appointment}/signal?tab={tab}"
    return connect(url, additional_headers=headers, open_timeout=10)


async def _json(socket: ClientConnection) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
    return found


async def _send(socket: ClientConnection, message: dict[str, Any]) -> None:
    await socket.send(json.dumps(message))


async def _refusal(socket_cm: Any) -> tuple[str, int]:
    async with socket_cm as socket:
        message = await _json(socket)
        with pytest.raises(ConnectionClosed) as closed:
            await _json(socket)
    assert message["type"] == "error"
    assert closed.value.rcvd is not None
    return str(message["message"]), closed.value.rcvd.code


async def test_joining_too_early_after_the_end_signed_out_or_from_another_site_is_refused(
    server: tuple[dict[str, Any], LiveServer],
) -> None:
    cast, live = server
    said, code = await _refusal(_open(live, cast["now"], "t1", None))
    assert (code, said) == (4401, "your session has ended; sign in again")
    jane = await _sign_in(live.base_url, "jane")
    said, code = await _refusal(_open(live, cast["later"], "t1", jane))
    assert code == 4400 and "opens 15 minutes before it starts" in said
    said, code = await _refusal(_open(live, cast["past"], "t1", jane))
    assert (code, said) == (4400, "this visit has ended")
    said, code = await _refusal(_open(live, cast["now"], "t1", jane, "https://evil.example"))
    assert code == 4403
    said, code = await _refusal(_open(live, str(uuid.uuid4()), "t1", jane))
    assert code == 4403 and "not yours" in said
    # None of that joined anything: the real join finds an empty waiting room.
    async with _open(live, cast["now"], "t1", jane) as socket:
        assert await _json(socket) == {"type": "waiting", "clinician_here": False}


async def test_a_dropped_socket_frees_the_seat_and_the_same_tab_rejoins_the_call(
    server: tuple[dict[str, Any], LiveServer], tmp_path: Any
) -> None:
    cast, live = server
    ada = await _sign_in(live.base_url, "ada", cast["secret"])
    jane = await _sign_in(live.base_url, "jane")
    async with _open(live, cast["now"], "ada-1", ada) as doctor:
        assert await _json(doctor) == {"type": "alone"}
        async with _open(live, cast["now"], "jane-1", jane) as patient:
            assert (await _json(patient))["type"] == "waiting"
            assert await _json(doctor) == {"type": "knock", "name": "Jane Doe"}
            await _send(patient, {"type": "offer", "data": {"sdp": "x"}})  # not relayed yet
            await _send(doctor, {"type": "admit"})
            assert (await _json(patient))["type"] == "start"
            assert await _json(doctor) == {"type": "start", "peer": "Jane Doe", "offerer": True}
            offer = {"type": "offer", "sdp": "v=0"}
            await _send(doctor, {"type": "offer", "data": offer})
            assert await _json(patient) == {"type": "offer", "data": offer}
            await _send(patient, {"type": "nonsense"})
            assert (await _json(patient))["type"] == "error"
        # The patient's connection dropped: the clinician hears of it, the seat is free.
        assert await _json(doctor) == {"type": "peer-left"}
        async with _open(live, cast["now"], "jane-1", jane) as back:
            # Admitted already: straight back into the call, no waiting room.
            assert (await _json(back))["type"] == "start"
            assert (await _json(doctor))["offerer"] is True
            await _send(back, {"type": "chat", "text": "I'm back"})
            assert await _json(back) == {"type": "chat", "from": "Jane Doe", "text": "I'm back"}
            assert (await _json(doctor))["text"] == "I'm back"
        await asyncio.sleep(1.5)  # a visit of a second or more is time worth recording

    database = Database(f"sqlite:///{tmp_path / 'medmesh.db'}")
    try:
        for _ in range(100):
            async with database.read() as conn:
                found = await TimeEntries(conn).search(patients=[cast["patient"]])
            if found:
                break
            await asyncio.sleep(0.1)
    finally:
        await database.dispose()
    [entry] = found
    assert entry.kind.value == "visit" and entry.interactive


async def test_the_program_page_lists_the_panel_with_days_still_needed_and_exports(
    server: tuple[dict[str, Any], LiveServer],
) -> None:
    cast, live = server
    ada = await _sign_in(live.base_url, "ada", cast["secret"])
    async with httpx.AsyncClient(base_url=live.base_url, cookies={SESSION_COOKIE: ada}) as client:
        program = await client.get("/rpm")
        assert program.status_code == 200, program.text
        assert "Jane Doe" in program.text
        assert "2 for 99445" in program.text  # no data yet: two days to the first device code
        assert "10 for 99470" in program.text
        as_pdf = await client.get("/rpm", params={"format": "pdf"})
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(as_pdf.content)).pages)
        assert "Jane Doe" in text and "Days with device data: 0" in text
        future = await client.get("/rpm", params={"month": "2099-01"})
        assert future.status_code == 400
        assert "has not begun yet" in future.text


async def test_activity_on_a_patients_page_counts_interactive_time_until_idle(
    server: tuple[dict[str, Any], LiveServer], tmp_path: Any
) -> None:
    cast, live = server
    ada = await _sign_in(live.base_url, "ada", cast["secret"])
    async with httpx.AsyncClient(base_url=live.base_url, cookies={SESSION_COOKIE: ada}) as client:
        page = await client.get(f"/patients/{cast['patient']}")
        assert 'src="/static/js/activity.js"' in page.text
        csrf = {"X-CSRF-Token": csrf_of(page.text)}
        path = f"/rpm/activity/{cast['patient']}"
        assert (await client.post(path)).status_code in (400, 403)  # no CSRF token
        assert (await client.post(path, headers=csrf)).status_code == 204
        await asyncio.sleep(1.5)
        assert (await client.post(path, headers=csrf)).status_code == 204
        other = await client.post(f"/rpm/activity/{uuid.uuid4()}", headers=csrf)
        assert other.status_code in (403, 404)
    database = Database(f"sqlite:///{tmp_path / 'medmesh.db'}")
    try:
        async with database.read() as conn:
            [entry] = await TimeEntries(conn).search(patients=[cast["patient"]])
    finally:
        await database.dispose()
    assert entry.kind.value == "interactive"
    assert entry.duration.total_seconds() >= 1.5  # one running entry, extended by the second
