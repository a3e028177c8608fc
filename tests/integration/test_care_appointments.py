"""Appointments through the real app on both backends: a clinician publishes a schedule, a
patient books a video slot, the clinician's calendar shows it, a second patient cannot take
the same slot (also when both ask at the same moment: a database constraint); bookings outside
the rules are refused and change nothing; cancel and reschedule follow the rules; Appointment,
Schedule and Slot are valid FHIR; appointments are in $everything and erased with the patient."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.access.erasure import erase_patient
from medmesh.store.database import Database
from medmesh.store.schema import appointments
from tests.care_fixtures import CareCast, care, care_http
from tests.helpers import AppClient

__all__ = ["care", "care_http"]  # fixtures, used by name

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = [{"day": d, "start": "00:00", "end": "23:30"} for d in _DAYS]  # any hour of a test
DAYTIME = [{"day": d, "start": "08:00", "end": "18:00"} for d in _DAYS]


def _at(days: int, hour: int, minute: int = 0) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def _publish(http: httpx.AsyncClient, cast: CareCast, **changes: Any) -> dict[str, Any]:
    body = {
        "timezone": "UTC",
        "slot_minutes": 30,
        "kinds": ["in-person", "video"],
        "hours": EVERY_DAY,
        "book_ahead_days": 30,
        "cancel_hours": 24,
        **changes,
    }
    response = await http.put("/api/v1/schedule", json=body, headers=cast.clinician)
    assert response.status_code == 200, response.text
    schedule: dict[str, Any] = response.json()
    return schedule


async def _book(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    patient_id: str,
    schedule_id: str,
    start: datetime,
    kind: str = "video",
) -> httpx.Response:
    return await http.post(
        "/api/v1/appointments",
        json={
            "patient": patient_id,
            "schedule": schedule_id,
            "start": start.isoformat(),
            "kind": kind,
            "reason": "Check the wound",
        },
        headers=headers,
    )


async def _booked(database: Database) -> int:
    async with database.read() as conn:
        query = (
            select(func.count()).select_from(appointments).where(appointments.c.status == "booked")
        )
        return int((await conn.execute(query)).scalar_one())


@pytest.fixture
async def shared(care: CareCast, database: Database) -> CareCast:
    """The other patient is in the same clinician's care team too, so both may book them."""
    await provisioning.add_to_care_team(
        database, care.other.patient_id, care.world.clinician_id, added_by="test"
    )
    return care


async def test_a_patient_books_a_video_slot_the_calendar_shows_it_and_nobody_else_takes_it(
    care_http: AppClient, shared: CareCast
) -> None:
    http, care = care_http, shared
    schedule = await _publish(http, care)
    start = _at(3, 10)
    slots = await http.get(
        f"/api/v1/schedules/{schedule['id']}/slots",
        params={"start": _at(3, 0).isoformat(), "end": _at(4, 0).isoformat()},
        headers=care.patient,
    )
    assert start.isoformat() in [s["start"] for s in slots.json()["slots"]]
    booked = await _book(http, care.patient, care.world.patient_id, schedule["id"], start)
    assert booked.status_code == 201, booked.text
    appointment = booked.json()
    assert (appointment["kind"], appointment["status"], appointment["end"]) == (
        "video",
        "booked",
        (start + timedelta(minutes=30)).isoformat(),
    )
    calendar = await http.get(
        "/api/v1/appointments",
        params={"mine": "true", "start": _at(3, 0).isoformat(), "end": _at(4, 0).isoformat()},
        headers=care.clinician,
    )
    assert [a["id"] for a in calendar.json()["appointments"]] == [appointment["id"]]
    taken = await _book(http, care.other_patient, care.other.patient_id, schedule["id"], start)
    assert taken.status_code == 409
    assert "just booked by someone else" in taken.json()["issue"][0]["diagnostics"]
    again = await http.get(
        f"/api/v1/schedules/{schedule['id']}/slots",
        params={"start": _at(3, 0).isoformat(), "end": _at(4, 0).isoformat()},
        headers=care.other_patient,
    )
    assert start.isoformat() not in [s["start"] for s in again.json()["slots"]]
    # The other patient does not see, cancel or move it.
    for path, body in (
        (f"/api/v1/appointments/{appointment['id']}/cancel", None),
        (f"/api/v1/appointments/{appointment['id']}/reschedule", {"start": _at(3, 11).isoformat()}),
    ):
        refused = await http.post(path, json=body, headers=care.other_patient)
        assert refused.status_code == 404
    theirs = await http.get("/api/v1/appointments", headers=care.other_patient)
    assert theirs.json()["appointments"] == []


async def test_two_patients_asking_for_one_slot_at_the_same_moment_get_one_booking(
    care_http: AppClient, shared: CareCast, database: Database
) -> None:
    http, care = care_http, shared
    schedule = await _publish(http, care)
    start = _at(5, 14, 30)
    answers = await asyncio.gather(
        *(
            _book(http, headers, patient, schedule["id"], start)
            for headers, patient in [
                (care.patient, care.world.patient_id),
                (care.other_patient, care.other.patient_id),
            ]
            * 3
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409]
    assert await _booked(database) == 1


async def test_bookings_outside_the_rules_are_refused_and_change_nothing(
    care_http: AppClient, shared: CareCast, database: Database
) -> None:
    http, care = care_http, shared
    schedule = await _publish(http, care, kinds=["video"], hours=DAYTIME)
    blocked = await http.post(
        "/api/v1/schedule/exceptions",
        json={"start": _at(6, 9).isoformat(), "end": _at(6, 12).isoformat()},
        headers=care.clinician,
    )
    assert blocked.status_code == 201, blocked.text
    patient = care.world.patient_id
    cases = [
        (_at(-1, 10), "video", "in the past"),
        (_at(3, 3), "video", "not one of the clinician's appointment times"),
        (_at(3, 10, 10), "video", "not one of the clinician's appointment times"),
        (_at(40, 10), "video", "at most 30 days ahead"),
        (_at(3, 10), "in-person", "offers video visits"),
        (_at(6, 10), "video", "not available at this time"),
    ]
    for start, kind, words in cases:
        answer = await _book(http, care.patient, patient, schedule["id"], start, kind)
        assert answer.status_code == 400, (start, answer.text)
        assert words in answer.json()["issue"][0]["diagnostics"]
    unknown = await _book(http, care.patient, patient, "no-such-schedule", _at(3, 10))
    assert unknown.status_code == 404
    naive = await http.post(
        "/api/v1/appointments",
        json={
            "patient": patient,
            "schedule": schedule["id"],
            "start": "2027-01-01T10:00",
            "kind": "video",
        },
        headers=care.patient,
    )
    assert naive.status_code == 400 and "zone" in naive.text
    for bad, words in (
        ({"timezone": "Mars/Olympus"}, "IANA"),
        ({"hours": [{"day": "mon", "start": "12:00", "end": "09:00"}]}, "end before they start"),
        ({"hours": [{"day": "fr", "start": "09:00", "end": "10:00"}]}, "day must be"),
        ({"kinds": ["telepathy"]}, "in-person and/or video"),
    ):
        refused = await http.put(
            "/api/v1/schedule",
            json={"timezone": "UTC", "hours": EVERY_DAY, **bad},
            headers=care.clinician,
        )
        assert refused.status_code == 400, (bad, refused.text)
        assert words in refused.json()["issue"][0]["diagnostics"]
    assert (
        await http.put(
            "/api/v1/schedule", json={"timezone": "UTC", "hours": []}, headers=care.patient
        )
    ).status_code == 403
    assert await _booked(database) == 0


async def test_cancel_and_reschedule_follow_the_rules(
    care_http: AppClient, shared: CareCast, database: Database
) -> None:
    http, care = care_http, shared
    schedule = await _publish(http, care)
    patient = care.world.patient_id
    soon = (
        await _book(
            http,
            care.clinician,
            patient,
            schedule["id"],
            datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=3),
        )
    ).json()
    late = await http.post(f"/api/v1/appointments/{soon['id']}/cancel", headers=care.patient)
    assert late.status_code == 400
    assert "up to 24 hours before" in late.json()["issue"][0]["diagnostics"]
    by_clinician = await http.post(
        f"/api/v1/appointments/{soon['id']}/cancel", headers=care.clinician
    )
    assert by_clinician.json()["status"] == "cancelled"
    twice = await http.post(f"/api/v1/appointments/{soon['id']}/cancel", headers=care.clinician)
    assert twice.status_code == 409

    mine = (await _book(http, care.patient, patient, schedule["id"], _at(4, 9))).json()
    theirs = await _book(
        http, care.other_patient, care.other.patient_id, schedule["id"], _at(4, 10)
    )
    assert theirs.status_code == 201
    onto_taken = await http.post(
        f"/api/v1/appointments/{mine['id']}/reschedule",
        json={"start": _at(4, 10).isoformat()},
        headers=care.patient,
    )
    assert onto_taken.status_code == 409
    still = await http.get(
        "/api/v1/appointments",
        params={"patient": patient, "status": "booked"},
        headers=care.patient,
    )
    assert [a["id"] for a in still.json()["appointments"]] == [mine["id"]]
    moved = await http.post(
        f"/api/v1/appointments/{mine['id']}/reschedule",
        json={"start": _at(4, 11).isoformat()},
        headers=care.patient,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["start"] == _at(4, 11).isoformat()
    assert await _booked(database) == 2


async def test_appointments_schedules_and_slots_are_fhir_and_erased_with_the_patient(
    care_http: AppClient, shared: CareCast, database: Database
) -> None:
    http, care = care_http, shared
    schedule = await _publish(http, care)
    start = _at(3, 10)
    booked = (await _book(http, care.patient, care.world.patient_id, schedule["id"], start)).json()
    read = await http.get(f"/fhir/Appointment/{booked['id']}", headers=care.patient)
    Appointment.model_validate(read.json())
    assert (
        read.json()["participant"][1]["actor"]["reference"]
        == f"Practitioner/{care.world.clinician_id}"
    )
    found = await http.get(
        "/fhir/Appointment",
        params={"patient": care.world.patient_id, "date": f"ge{_at(3, 0).date().isoformat()}"},
        headers=care.clinician,
    )
    Bundle.model_validate(found.json())
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [booked["id"]]
    assert (
        await http.get(f"/fhir/Appointment/{booked['id']}", headers=care.other_patient)
    ).status_code == 404
    Schedule.model_validate(
        (await http.get(f"/fhir/Schedule/{schedule['id']}", headers=care.patient)).json()
    )
    slots = await http.get(
        "/fhir/Slot",
        params={
            "schedule": schedule["id"],
            "start": [f"ge{_at(3, 9).isoformat()}", f"lt{_at(3, 11).isoformat()}"],
        },
        headers=care.patient,
    )
    assert slots.status_code == 200, slots.text
    entries = [e["resource"] for e in slots.json()["entry"]]
    for slot in entries:
        Slot.model_validate(slot)
    assert [(s["start"], s["status"]) for s in entries] == [
        (_at(3, 9).isoformat().replace("+00:00", "Z"), "free"),
        (_at(3, 9, 30).isoformat().replace("+00:00", "Z"), "free"),
        (_at(3, 10).isoformat().replace("+00:00", "Z"), "busy"),
        (_at(3, 10, 30).isoformat().replace("+00:00", "Z"), "free"),
    ]
    one = await http.get(f"/fhir/Slot/{entries[2]['id']}", headers=care.patient)
    assert one.json()["status"] == "busy"
    assert (await http.get("/fhir/Slot", headers=care.patient)).status_code == 400
    everything = await http.get(
        f"/fhir/Patient/{care.world.patient_id}/$everything",
        params={"_type": "Appointment"},
        headers=care.patient,
    )
    assert [e["resource"]["id"] for e in everything.json()["entry"]] == [booked["id"]]
    certificate = await erase_patient(
        http.app.state.services.database, care.world.patient_id, reason="asked", requested_by="dpo"
    )
    assert certificate.document["rows_deleted"]["appointments"] == 1
    assert await _booked(database) == 0
