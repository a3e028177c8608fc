"""HTTP ingest against a running `medmesh serve`, on both backends: media types, ignored fields,
refusal details, inconsistent values, back-dated readings after a reassignment, and a device
that drops mid-body (issue 16, items 8, 9, 10, 12)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from medmesh import provisioning
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.schema import dead_letters
from tests.conftest import World, make_world
from tests.helpers import reading
from tests.live_server import LiveServer, live_server

URL = "/ingest/v1/readings"


@pytest.fixture
def server(database_url: str, tmp_path: Path, world: World) -> Iterator[LiveServer]:
    with live_server(database_url, tmp_path / "server.log") as running:
        yield running


def _post(server: LiveServer, world: World, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        server.base_url + URL,
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {world.device_secret}", **headers},
        timeout=30,
    )


async def _details(database: Database) -> list[tuple[str, str]]:
    query = select(dead_letters.c.reason, dead_letters.c.detail).order_by(dead_letters.c.id)
    async with database.read() as conn:
        return [(r, d) for r, d in (await conn.execute(query)).all()]


async def _values(database: Database, patient_id: str) -> list[float]:
    async with database.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=patient_id))
    return sorted(v.value for o in found for v in o.values)


# --- item 12 ---------------------------------------------------------------------------------


# The media types are tried in turn against one server: a server start is most of the time.
NOT_JSON = ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
JSON = ["application/json", "application/json; charset=utf-8", "application/x+json"]


def test_a_body_that_is_not_json_by_its_media_type_gets_415_and_json_ones_are_accepted(
    server: LiveServer, world: World
) -> None:
    for index, content_type in enumerate(NOT_JSON):
        body = {"readings": [reading(f"not-json-{index}")]}
        response = _post(server, world, body, **{"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.headers["content-type"].startswith("application/fhir+json")
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "not-supported"
        assert "application/json" in outcome["issue"][0]["diagnostics"]
    for index, content_type in enumerate(JSON):
        body = {"readings": [reading(f"json-{index}")]}
        response = _post(server, world, body, **{"Content-Type": content_type})
        assert (response.status_code, response.json()["accepted"]) == (202, 1), content_type


async def test_fields_medmesh_does_not_read_are_listed_in_the_receipt(
    server: LiveServer, world: World, database: Database
) -> None:
    other = await make_world(database, identifier="MRN-2")
    body = {
        "patient": other.patient_id,
        "readings": [{**reading("m-1"), "note": "after a run"}, reading("m-2", value=75)],
    }
    response = _post(server, world, body, **{"Content-Type": "application/json"})
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [],
        "ignored_fields": ["patient", "readings[].note"],
    }
    # The body-level patient is not obeyed: the readings are the assigned patient's.
    assert await _values(database, world.patient_id) == [72, 75]
    assert await _values(database, other.patient_id) == []


async def test_a_unit_refusal_names_the_field_not_the_unit_sent(
    server: LiveServer, world: World, database: Database
) -> None:
    secret_unit = "Jane-Doe-MRN-1-glucose"
    response = _post(server, world, {"readings": [reading("m-1", unit=secret_unit)]})
    (rejected,) = response.json()["rejected"]
    assert rejected["reason"] == "unit-not-convertible"
    assert "unit" in rejected["detail"]
    assert "/min" in rejected["detail"]  # what is expected
    assert secret_unit[:8] not in rejected["detail"]
    assert [(r, secret_unit[:8] in d) for r, d in await _details(database)] == [
        ("unit-not-convertible", False)
    ]


# --- item 10 ---------------------------------------------------------------------------------


async def test_inconsistent_values_are_refused_as_implausible(
    server: LiveServer, world: World, database: Database
) -> None:
    batch = [
        reading("bp-upside-down", "blood-pressure", {"systolic": 60, "diastolic": 120}, "mm[Hg]"),
        reading("bp-equal", "blood-pressure", {"systolic": 90, "diastolic": 90}, "mm[Hg]"),
        reading("half-step", "steps", 0.5, "{steps}"),
        reading("bp-ok", "blood-pressure", {"systolic": 120, "diastolic": 80}, "mm[Hg]"),
        reading("steps-ok", "steps", 4200, "{steps}"),
    ]
    response = _post(server, world, {"readings": batch})
    assert response.status_code == 202
    receipt = response.json()
    assert receipt["accepted"] == 2
    assert [(r["id"], r["reason"], r["detail"]) for r in receipt["rejected"]] == [
        ("bp-upside-down", "implausible-value", "blood-pressure systolic must be higher than "
         "diastolic"),
        ("bp-equal", "implausible-value", "blood-pressure systolic must be higher than diastolic"),
        ("half-step", "implausible-value", "steps must be a whole number"),
    ]  # fmt: skip
    assert [r for r, _ in await _details(database)] == ["implausible-value"] * 3


# --- item 9 ----------------------------------------------------------------------------------


async def test_back_dated_readings_into_the_previous_patients_record_are_refused(
    server: LiveServer, world: World, database: Database
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    other = await make_world(database, identifier="MRN-2")
    await provisioning.assign_device(
        database, world.device_id, other.patient_id, now - timedelta(hours=1)
    )
    batch = [
        reading("buffered", value=70, at=now - timedelta(hours=2)),  # inside 24 h: patient A's
        reading("back-dated", value=71, at=now - timedelta(days=3)),  # A's time, long before
        reading("current", value=72, at=now - timedelta(minutes=5)),  # patient B's
    ]
    response = _post(server, world, {"readings": batch})
    receipt = response.json()
    assert receipt["accepted"] == 2
    (refused,) = receipt["rejected"]
    assert (refused["id"], refused["reason"]) == ("back-dated", "before-reassignment")
    assert "last assignment change" in refused["detail"]
    assert await _values(database, world.patient_id) == [70]
    assert await _values(database, other.patient_id) == [72]
    assert [r for r, _ in await _details(database)] == ["before-reassignment"]


# --- item 8 ----------------------------------------------------------------------------------


def test_a_device_that_drops_mid_body_is_logged_as_a_disconnect_without_a_500(
    server: LiveServer, world: World, tmp_path: Path
) -> None:
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {world.device_secret}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b'{"readings": [{"id": "m-1", "type": "heart')
    log_path = tmp_path / "server.log"
    deadline = time.monotonic() + 20
    while f"POST {URL} " not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = log_path.read_text()
    (line,) = [entry for entry in log.splitlines() if f"POST {URL} " in entry]
    assert f"POST {URL} 400 " in line
    assert "client disconnected before the request body was complete" in log
    assert "Traceback" not in log
    assert "ClientDisconnect" not in log
    assert " 500 " not in log
