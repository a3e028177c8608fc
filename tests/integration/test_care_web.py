"""The clinician's care pages over HTTP, in-process, on both backends: the patient page's
messages, medications and appointments on the page's own access decision, the medication
forms (CSRF, plain-language errors, nothing stored when refused), the schedule form and the
calendar grid. Each new web route has a row in WEB_MATRIX: refused to a clinician outside the
patient's care team. The browser checks are in tests/e2e/test_care_pages_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pyotp
import pytest
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.store.database import Database
from medmesh.store.schema import medications
from tests.accounts_fixtures import Person, make_clinician, sign_in
from tests.care_fixtures import CareCast, care, care_http, start_thread
from tests.conftest import CLINICIAN_PASSWORD
from tests.helpers import AppClient, stamp

__all__ = ["care", "care_http"]  # fixtures, used by name


async def _staff(database: Database, care: CareCast) -> Person:
    """The world's care-team clinician, enrolled for two-step sign-in."""
    async with database.read() as conn:
        from medmesh.store.users import Users

        account = await Users(conn).get(care.world.clinician_id)
    assert account is not None
    secret = pyotp.random_base32(32)
    await provisioning.activate_totp(database, account.username, secret)
    return Person(account.id, account.username, CLINICIAN_PASSWORD, secret)


@pytest.fixture
async def doctor(
    care_http: AppClient, database: Database, care: CareCast
) -> AsyncIterator[tuple[AppClient, str]]:
    """The care-team clinician's browser session: (client, CSRF token)."""
    person = await _staff(database, care)
    csrf = await sign_in(care_http, person)
    yield care_http, csrf


@pytest.fixture
async def outsider(
    care_http: AppClient, database: Database, care: CareCast
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A clinician of the same organisation in no care team, in a browser of their own."""
    person = await make_clinician(database, "dr.outside", "Dr Outside")
    app = care_http._transport.app  # type: ignore[attr-defined]
    async with AppClient(app) as client:
        yield client, await sign_in(client, person)


async def _medication_count(database: Database, patient_id: str) -> int:
    async with database.read() as conn:
        query = select(func.count()).where(medications.c.patient_id == patient_id)
        return int((await conn.execute(query)).scalar_one())


async def _publish_schedule(http: AppClient, care: CareCast) -> dict[str, Any]:
    answer = await http.put(
        "/api/v1/schedule",
        json={
            "timezone": "Europe/Berlin",
            "kinds": ["video", "in-person"],
            "hours": [
                {"day": d, "start": "08:00", "end": "18:00"}
                for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            ],
        },
        headers=care.clinician,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _next_slot(days: int, hour_utc: int = 10) -> str:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(
        hour=hour_utc, minute=0, second=0, microsecond=0
    )
    return start.isoformat()


async def test_the_patient_page_shows_messages_medications_and_appointments(
    doctor: tuple[AppClient, str], care: CareCast
) -> None:
    http, _ = doctor
    patient_id = care.world.patient_id
    written = await start_thread(http, patient_id, care.patient, subject="Dizzy in the morning")
    assert written.status_code == 201, written.text
    for name in ("Lisinopril 10 mg tablet", "Metformin 500 mg tablet"):
        added = await http.post(
            f"/api/v1/patients/{patient_id}/medications",
            json={"name": name, "dosage": "1 tablet a day", "refills": 2},
            headers=care.clinician,
        )
        assert added.status_code == 201, added.text
        last = added.json()
    stopped = await http.post(f"/api/v1/medications/{last['id']}/stop", headers=care.clinician)
    assert stopped.status_code == 200
    schedule = await _publish_schedule(http, care)
    booked = await http.post(
        "/api/v1/appointments",
        json={
            "patient": patient_id,
            "schedule": schedule["id"],
            "start": _next_slot(2),
            "kind": "video",
        },
        headers=care.patient,
    )
    assert booked.status_code == 201, booked.text

    page = await http.get(f"/patients/{patient_id}")
    assert page.status_code == 200
    html = page.text
    assert "Dizzy in the morning" in html and "1 unread" in html
    assert 'class="medication medication-active"' in html and "Lisinopril 10 mg tablet" in html
    stopped_part = html.split("<h4>Stopped</h4>", 1)[1].split("</ul>", 1)[0]
    assert "Metformin 500 mg tablet" in stopped_part
    upcoming = html.split("<h4>Upcoming</h4>", 1)[1].split("</ul>", 1)[0]
    assert "video visit with" in upcoming
    assert "Add a medication" in html  # the care team keeps the list


async def test_a_clinician_adds_and_stops_a_medication_by_the_form(
    doctor: tuple[AppClient, str], care: CareCast, database: Database
) -> None:
    http, csrf = doctor
    patient_id = care.world.patient_id
    added = await http.post(
        f"/patients/{patient_id}/medications",
        data={
            "csrf_token": csrf,
            "name": "Amlodipine 5 mg tablet",
            "dosage": "1 tablet in the morning",
            "refills": "3",
            "rxnorm": "197361",
        },
    )
    assert added.status_code == 303
    assert added.headers["location"] == f"/patients/{patient_id}#medications"
    listed = await http.get(f"/api/v1/patients/{patient_id}/medications", headers=care.patient)
    (medication,) = listed.json()["medications"]
    assert medication["name"] == "Amlodipine 5 mg tablet"
    assert medication["refills"] == 3 and medication["rxnorm"] == "197361"
    assert medication["status"] == "active"

    stop = await http.post(
        f"/patients/{patient_id}/medications/{medication['id']}/stop", data={"csrf_token": csrf}
    )
    assert stop.status_code == 303
    listed = await http.get(f"/api/v1/patients/{patient_id}/medications", headers=care.patient)
    assert listed.json()["medications"][0]["status"] == "stopped"
    again = await http.post(
        f"/patients/{patient_id}/medications/{medication['id']}/stop", data={"csrf_token": csrf}
    )
    assert again.status_code == 409
    assert "This medication is not active any more." in again.text


@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"name": "  ", "dosage": "1 a day", "refills": "0"}, "Name is required."),
        ({"name": "Aspirin", "dosage": "", "refills": "0"}, "Dosage is required."),
        ({"name": "Aspirin", "dosage": "1 a day", "refills": "many"}, "Refills must be a whole"),
        ({"name": "Aspirin", "dosage": "1 a day", "refills": "40"}, "Refills must be between"),
        (
            {"name": "Aspirin", "dosage": "1 a day", "refills": "0", "rxnorm": "ASA"},
            "Rxnorm must be an RxNorm concept id",
        ),
    ],
)
async def test_a_refused_medication_form_says_why_keeps_the_entries_and_stores_nothing(
    doctor: tuple[AppClient, str],
    care: CareCast,
    database: Database,
    form: dict[str, str],
    said: str,
) -> None:
    http, csrf = doctor
    patient_id = care.world.patient_id
    answer = await http.post(
        f"/patients/{patient_id}/medications", data={"csrf_token": csrf, **form}
    )
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text and said in answer.text
    assert f'value="{form["dosage"]}"' in answer.text  # what was entered is kept
    assert await _medication_count(database, patient_id) == 0


async def test_the_medication_form_needs_the_sessions_csrf_token(
    doctor: tuple[AppClient, str], care: CareCast, database: Database
) -> None:
    http, _ = doctor
    patient_id = care.world.patient_id
    answer = await http.post(
        f"/patients/{patient_id}/medications",
        data={"name": "Aspirin", "dosage": "1 a day", "refills": "0"},
    )
    assert answer.status_code == 403
    assert await _medication_count(database, patient_id) == 0


def _web_matrix(care: CareCast, medication_id: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every web route this work added that names a patient (method, path, form)."""
    p = care.world.patient_id
    return [
        ("GET", f"/patients/{p}", {}),
        ("POST", f"/patients/{p}/medications", {"name": "X", "dosage": "1", "refills": "0"}),
        ("POST", f"/patients/{p}/medications/{medication_id}/stop", {}),
    ]


async def test_web_matrix_a_clinician_outside_the_care_team_is_refused_and_nothing_changes(
    care_http: AppClient,
    care: CareCast,
    database: Database,
    outsider: tuple[httpx.AsyncClient, str],
) -> None:
    patient_id = care.world.patient_id
    added = await care_http.post(
        f"/api/v1/patients/{patient_id}/medications",
        json={"name": "Lisinopril", "dosage": "1 a day", "refills": 1},
        headers=care.clinician,
    )
    medication_id = added.json()["id"]
    client, csrf = outsider
    for method, path, form in _web_matrix(care, medication_id):
        if method == "GET":
            answer = await client.get(path)
        else:
            answer = await client.post(path, data={"csrf_token": csrf, **form})
        assert answer.status_code == 404, (method, path)
        assert "Lisinopril" not in answer.text
    assert await _medication_count(database, patient_id) == 1
    listed = await care_http.get(f"/api/v1/patients/{patient_id}/medications", headers=care.patient)
    assert listed.json()["medications"][0]["status"] == "active"


def _hours_form(csrf: str, **changes: str) -> dict[str, str]:
    form = {
        "csrf_token": csrf,
        "timezone": "Europe/Berlin",
        "slot_minutes": "30",
        "kind-video": "on",
        "book_ahead_days": "30",
        "cancel_hours": "24",
    }
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        form |= {f"{day}-start-0": "09:00", f"{day}-end-0": "12:00"}
    return form | changes


async def _stored_schedule(database: Database, clinician_id: str) -> Any:
    from medmesh.store.appointments import Schedules

    async with database.read() as conn:
        return await Schedules(conn).of_clinician(clinician_id)


async def test_a_clinician_publishes_hours_by_the_form(
    doctor: tuple[AppClient, str], care: CareCast, database: Database
) -> None:
    http, csrf = doctor
    form_page = await http.get("/inbox/schedule")
    assert form_page.status_code == 200 and "Publish your hours" in form_page.text
    published = await http.post(
        "/inbox/schedule",
        data=_hours_form(csrf, **{"mon-start-1": "14:00", "mon-end-1": "16:30"}),
    )
    assert published.status_code == 303
    schedule = await _stored_schedule(database, care.world.clinician_id)
    assert schedule.timezone == "Europe/Berlin" and schedule.slot_minutes == 30
    assert [k.value for k in schedule.kinds] == ["video"]
    monday = [
        (h.start.isoformat("minutes"), h.end.isoformat("minutes"))
        for h in schedule.hours
        if h.weekday == 0
    ]
    assert monday == [("09:00", "12:00"), ("14:00", "16:30")]
    shown = await http.get("/inbox/schedule?saved=1")
    assert 'value="14:00"' in shown.text and "Saved." in shown.text

    blocked = await http.post(
        "/inbox/schedule/exceptions",
        data={"csrf_token": csrf, "start": "2027-07-05T09:00", "end": "2027-07-09T18:00"},
    )
    assert blocked.status_code == 303
    listed = await http.get("/inbox/schedule")
    assert "05 Jul 2027 07:00 UTC" in listed.text  # 09:00 in Berlin in summer


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"slot_minutes": "3"}, "Slot length must be between 5 and 240."),
        ({"slot_minutes": "half an hour"}, "Slot length must be a whole number."),
        ({"timezone": "Berlin"}, "Time zone must be an IANA time zone"),
        ({"kind-video": ""}, "Give at least one kind of visit"),
        ({"mon-end-0": ""}, "Give both a start and an end for Monday."),
        ({"tue-start-0": "12:00", "tue-end-0": "09:00"}, "The hours of tue end before they start."),
        ({"book_ahead_days": "0"}, "How far ahead patients may book must be between 1 and 365."),
    ],
)
async def test_a_refused_hours_form_says_why_and_changes_nothing(
    doctor: tuple[AppClient, str],
    care: CareCast,
    database: Database,
    changes: dict[str, str],
    said: str,
) -> None:
    http, csrf = doctor
    answer = await http.post("/inbox/schedule", data=_hours_form(csrf, **changes))
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text and said in answer.text
    assert await _stored_schedule(database, care.world.clinician_id) is None


async def test_a_blocked_time_that_ends_before_it_starts_is_refused(
    doctor: tuple[AppClient, str], care: CareCast
) -> None:
    http, csrf = doctor
    assert (await http.post("/inbox/schedule", data=_hours_form(csrf))).status_code == 303
    answer = await http.post(
        "/inbox/schedule/exceptions",
        data={"csrf_token": csrf, "start": "2031-08-08T09:00", "end": "2031-08-04T09:00"},
    )
    assert answer.status_code == 400 and "End must be after start." in answer.text


async def test_the_calendar_grid_shows_a_booked_video_visit_and_open_slots_in_the_viewers_zone(
    doctor: tuple[AppClient, str],
    care: CareCast,
    outsider: tuple[httpx.AsyncClient, str],
) -> None:
    http, _ = doctor
    schedule = await _publish_schedule(http, care)  # 08:00–18:00 Berlin, every day
    start = datetime.fromisoformat(_next_slot(3, hour_utc=10))
    booked = await http.post(
        "/api/v1/appointments",
        json={
            "patient": care.world.patient_id,
            "schedule": schedule["id"],
            "start": start.isoformat(),
            "kind": "video",
        },
        headers=care.patient,
    )
    assert booked.status_code == 201, booked.text
    day = start.date().isoformat()
    for zone, local in (("Asia/Tokyo", start.astimezone(ZoneInfo("Asia/Tokyo"))), ("UTC", start)):
        grid = await http.get(f"/inbox/calendar?view=week&date={day}&tz={zone}")
        assert grid.status_code == 200
        assert f"Times in {zone}." in grid.text
        visit = re.search(r'<div class="booked">(.*?)</div>', grid.text, re.S)
        assert visit is not None
        assert local.strftime("%H:%M") in visit.group(1) and "video visit" in visit.group(1)
        assert " open</div>" in grid.text
    one_day = await http.get(f"/inbox/calendar?view=day&date={day}&tz=UTC")
    assert one_day.text.count('<th scope="col">') == 2  # the hour column and the day
    assert "video visit" in one_day.text
    inbox = await http.get("/inbox")
    assert 'href="/inbox/calendar"' in inbox.text

    client, _ = outsider
    theirs = await client.get(f"/inbox/calendar?view=week&date={day}&tz=UTC")
    assert theirs.status_code == 200 and "video visit" not in theirs.text


@pytest.fixture
async def patient_browser(
    care_http: AppClient, care: CareCast
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The patient's own browser session."""
    person = Person(care.patient_user_id, "jane-doe", CLINICIAN_PASSWORD, None)
    app = care_http._transport.app  # type: ignore[attr-defined]
    async with AppClient(app) as client:
        yield client, await sign_in(client, person)


async def test_a_patient_sees_their_readings_as_charts_and_when_each_device_last_reported(
    care_http: AppClient, care: CareCast, patient_browser: tuple[httpx.AsyncClient, str]
) -> None:
    now = datetime.now(UTC)
    readings = [
        {
            "id": f"hr-{i}",
            "type": "heart-rate",
            "time": stamp(now - timedelta(hours=30 - i)),
            "value": 60 + i,
            "unit": "/min",
        }
        for i in range(30)
    ]
    sent = await care_http.post(
        "/ingest/v1/readings", json={"readings": readings}, headers=care.world.device_headers
    )
    assert sent.status_code in (200, 202), sent.text
    await care_http.settled()
    client, _ = patient_browser
    page = await client.get("/me/readings")
    assert page.status_code == 200
    config = orjson.loads(
        re.search(r'id="chart-data">(.*?)</script>', page.text, re.S).group(1)  # type: ignore[union-attr]
    )
    assert config["range"] == "7d" and config["patient"] == care.world.patient_id
    heart = next(v for v in config["vitals"] if v["key"] == "hr")
    assert max(m for m in heart["data"]["series"]["hr"]["mean"] if m is not None) == 89
    assert "/static/js/charts.js" in page.text  # the dashboard's chart code, not a copy
    device = re.search(r'<li class="my-device">(.*?)</li>', page.text, re.S)
    assert device is not None and "Last sent something" in device.group(1)
    assert "<time datetime=" in device.group(1)
    day = await client.get("/me/readings?range=24h")
    config = orjson.loads(
        re.search(r'id="chart-data">(.*?)</script>', day.text, re.S).group(1)  # type: ignore[union-attr]
    )
    heart = next(v for v in config["vitals"] if v["key"] == "hr")
    assert len(heart["data"]["x"]) == 23  # 23 h ago to 1 h ago: the last day's only


async def test_the_readings_page_is_the_patients_own(
    care_http: AppClient, care: CareCast, doctor: tuple[AppClient, str]
) -> None:
    http, _ = doctor
    staff = await http.get("/me/readings")
    assert staff.status_code == 303 and staff.headers["location"] == "/"
    app = care_http._transport.app  # type: ignore[attr-defined]
    async with AppClient(app) as anonymous:
        answer = await anonymous.get("/me/readings")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def _care_team_unread(http: AppClient, care: CareCast) -> int:
    found = await http.get(
        f"/api/v1/patients/{care.world.patient_id}/threads", headers=care.clinician
    )
    assert found.status_code == 200, found.text
    return sum(int(t["unread"]) for t in found.json()["threads"])


async def test_only_the_care_team_marks_a_conversation_read_by_opening_it(
    care_http: AppClient,
    care: CareCast,
    database: Database,
    outsider: tuple[httpx.AsyncClient, str],
) -> None:
    written = await start_thread(care_http, care.world.patient_id, care.patient)
    thread_id = written.json()["id"]
    await _consent_for_outsider(care_http, care, database)
    client, _ = outsider
    read = await client.get(f"/inbox/threads/{thread_id}")
    assert read.status_code == 200 and "The wound looks red since yesterday." in read.text
    assert await _care_team_unread(care_http, care) == 1  # still waiting for the care team

    person = await _staff(database, care)
    app = care_http._transport.app  # type: ignore[attr-defined]
    async with AppClient(app) as team:
        await sign_in(team, person)
        assert (await team.get(f"/inbox/threads/{thread_id}")).status_code == 200
    assert await _care_team_unread(care_http, care) == 0


async def test_web_matrix_a_patient_is_sent_home_from_the_clinicians_care_pages(
    care: CareCast,
    database: Database,
    patient_browser: tuple[httpx.AsyncClient, str],
) -> None:
    client, csrf = patient_browser
    p = care.world.patient_id
    rows = [
        ("GET", "/inbox/calendar", {}),
        ("GET", "/inbox/schedule", {}),
        ("POST", "/inbox/schedule", {"timezone": "UTC", "slot_minutes": "30"}),
        ("POST", "/inbox/schedule/exceptions", {"start": "2027-01-01T09:00"}),
        ("POST", f"/patients/{p}/medications", {"name": "X", "dosage": "1", "refills": "0"}),
    ]
    for method, path, form in rows:
        if method == "GET":
            answer = await client.get(path)
        else:
            answer = await client.post(path, data={"csrf_token": csrf, **form})
        assert answer.status_code == 303 and answer.headers["location"] == "/me", path
    assert await _medication_count(database, p) == 0


async def test_a_consent_limited_to_vital_signs_shows_the_patient_page_without_care_data(
    care_http: AppClient,
    care: CareCast,
    database: Database,
    outsider: tuple[httpx.AsyncClient, str],
) -> None:
    p = care.world.patient_id
    await start_thread(care_http, p, care.patient, subject="Private worry")
    await care_http.post(
        f"/api/v1/patients/{p}/medications",
        json={"name": "Sertraline 50 mg tablet", "dosage": "1 a day", "refills": 1},
        headers=care.clinician,
    )
    await _consent_for_outsider(care_http, care, database, ("vital-signs",))
    client, _ = outsider
    page = await client.get(f"/patients/{p}")
    assert page.status_code == 200
    assert "does not cover messages, medications or appointments" in page.text
    assert "Private worry" not in page.text and "Sertraline" not in page.text


async def _consent_for_outsider(
    http: AppClient, care: CareCast, database: Database, categories: tuple[str, ...] = ()
) -> None:
    """The patient lets the outside clinician see their record (some categories only, if
    given)."""
    async with database.read() as conn:
        from medmesh.store.users import Users

        outside = await Users(conn).find_by_username("dr.outside")
    assert outside is not None
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"reference": {"reference": f"Practitioner/{outside.id}"}}],
        "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
        ],
    }
    if categories:
        system = "http://terminology.hl7.org/CodeSystem/observation-category"
        provision["code"] = [{"coding": [{"system": system, "code": c}]} for c in categories]
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": f"Patient/{care.world.patient_id}"},
        "provision": provision,
    }
    granted = await http.post("/fhir/Consent", json=consent, headers=care.patient)
    assert granted.status_code == 201, granted.text


async def _interactive_entries(database: Database, patient_id: str) -> list[Any]:
    from medmesh.domain.visits import TimeKind
    from medmesh.store.visits import TimeEntries

    async with database.read() as conn:
        return await TimeEntries(conn).search(patients=[patient_id], kinds=[TimeKind.INTERACTIVE])


async def test_a_clinicians_answers_to_messages_and_refills_count_as_interactive_time(
    doctor: tuple[AppClient, str],
    care: CareCast,
    database: Database,
    outsider: tuple[httpx.AsyncClient, str],
) -> None:
    """Answering a patient's message and deciding their refill are moments of interactive work
    on their care (issue 11: messages and refills, not only the patient page); someone outside
    the care team answering by consent counts for nothing."""
    client, csrf = doctor
    p = care.world.patient_id
    written = await start_thread(client, p, care.patient)
    thread_id = written.json()["id"]
    assert await _interactive_entries(database, p) == []
    answered = await client.post(
        f"/inbox/threads/{thread_id}",
        data={"csrf_token": csrf, "body": "Keep it clean and dry."},
    )
    assert answered.status_code == 303, answered.text
    (entry,) = await _interactive_entries(database, p)
    assert entry.clinician_id == care.world.clinician_id
    medication = await client.post(
        f"/api/v1/patients/{p}/medications",
        json={"name": "Lisinopril 10 mg tablet", "dosage": "1 a day", "refills": 1},
        headers=care.clinician,
    )
    asked = await client.post(
        f"/api/v1/medications/{medication.json()['id']}/refill-requests",
        json={},
        headers=care.patient,
    )
    assert asked.status_code == 201, asked.text
    approved = await client.post(
        f"/inbox/refills/{asked.json()['id']}/approve",
        data={"csrf_token": csrf, "refills": "2"},
    )
    assert approved.status_code == 303, approved.text
    (extended,) = await _interactive_entries(database, p)  # the same running entry, extended
    assert extended.id == entry.id and extended.end >= entry.end

    await _consent_for_outsider(client, care, database)
    other, other_csrf = outsider
    by_consent = await other.post(
        f"/inbox/threads/{thread_id}", data={"csrf_token": other_csrf, "body": "Seen."}
    )
    assert by_consent.status_code in (303, 400, 403, 404)  # answered or refused: no time
    entries = await _interactive_entries(database, p)
    assert {e.clinician_id for e in entries} == {care.world.clinician_id}
