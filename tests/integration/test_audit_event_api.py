"""The audit log read as FHIR AuditEvent through the real app, validated with fhir.resources
(R4B's AuditEvent is R4's), and searched by a real FHIR client (fhirpy) over a live server."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhirpy import AsyncFHIRClient

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from tests.audit_fixtures import T0, entry, fill
from tests.conftest import CLINICIAN_PASSWORD, World
from tests.helpers import stamp
from tests.live_server import live_server


@pytest.fixture
async def world(world: World, database: Database) -> World:
    """The world, its token the patient's own: a patient reads who looked at their record."""
    account = await provisioning.create_user(
        database,
        username="jane",
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=CLINICIAN_PASSWORD,
        patient_id=world.patient_id,
    )
    token = await provisioning.issue_user_token(database, user_id=account.id, scopes="patient/*.rs")
    return dataclasses.replace(world, token=token)


async def _get(client: httpx.AsyncClient, world: World, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers=world.reader_headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()


async def test_a_read_is_an_audit_event_naming_who_what_when_why_and_from_where(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    async with database.write() as conn:
        record = await AuditLog(conn).append(entry(7, patient_id=world.patient_id), at=T0)
    event = await _get(client, world, f"/fhir/AuditEvent/{record.id}")
    AuditEvent.model_validate(event)
    assert event["id"] == record.id
    assert event["type"]["code"] == "110110"  # DICOM: Patient Record
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}
    ]
    assert (event["action"], event["outcome"]) == ("R", "0")
    assert event["recorded"] == "2026-11-25T09:30:00.123456Z"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    agent = event["agent"][0]
    assert agent["requestor"] is True
    assert agent["who"]["display"] == "Dr Zoë Ångström 1"
    assert agent["who"]["identifier"]["value"] == "user-1"
    assert agent["network"] == {"address": "192.0.2.10", "type": "2"}
    assert agent["policy"] == ["urn:medmesh:access-basis:care-team"]
    assert event["source"]["observer"]["display"] == "medmesh"
    assert [e["what"]["reference"] for e in event["entity"]] == [
        f"Patient/{world.patient_id}",
        "Observation/obs-7",
    ]
    chain = {x["url"]: x for x in event["extension"][0]["extension"]}
    assert chain["seq"]["valueInteger"] == 1 and chain["hash"]["valueString"] == record.hash


async def test_searches_exports_and_break_glass_are_coded_as_such(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    entries = [
        entry(1, patient_id=world.patient_id, subtype="search", resource_id=None),
        entry(2, patient_id=world.patient_id, action="E", subtype="export", resource_type=None),
        entry(3, patient_id=world.patient_id, subtype="break-glass", purpose="ETREAT"),
        entry(4, patient_id=world.patient_id, action="C", subtype="create", outcome="4"),
    ]
    async with database.write() as conn:
        records = await AuditLog(conn).append_many(entries)
    events = [await _get(client, world, f"/fhir/AuditEvent/{r.id}") for r in records]
    for event in events:
        AuditEvent.model_validate(event)
    search, export, break_glass, refused = events
    assert search["type"]["code"] == "110112"  # Query
    assert search["subtype"][0]["code"] == "search-type"
    assert search["entity"][1]["type"]["code"] == "Observation"
    assert "what" not in search["entity"][1]
    assert (export["type"]["code"], export["action"]) == ("110106", "E")
    assert export["subtype"][0] == {
        "system": "https://medmesh.dev/fhir/CodeSystem/audit-subtype",
        "code": "export",
    }
    assert break_glass["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert break_glass["subtype"][0]["code"] == "break-glass"
    assert (refused["action"], refused["outcome"]) == ("C", "4")


async def test_a_patient_record_search_pages_newest_first(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    async with database.write() as conn:
        log = AuditLog(conn)
        for n in range(5):
            await log.append(entry(n, patient_id=world.patient_id), at=T0 + timedelta(hours=n))
        await log.append(entry(9, patient_id="someone-else"), at=T0)
    bundle = await _get(
        client, world, "/fhir/AuditEvent", patient=f"Patient/{world.patient_id}", _count="2"
    )
    Bundle.model_validate(bundle)
    seen = []
    while True:
        seen += [e["resource"]["entity"][1]["what"]["reference"] for e in bundle["entry"]]
        assert all(
            e["fullUrl"].endswith(f"/AuditEvent/{e['resource']['id']}") for e in bundle["entry"]
        )
        following = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        if following is None:
            break
        response = await client.get(following, headers=world.reader_headers)
        bundle = response.json()
    assert seen == [f"Observation/obs-{n}" for n in (4, 3, 2, 1, 0)]

    since = await _get(
        client,
        world,
        "/fhir/AuditEvent",
        patient=world.patient_id,
        date=f"ge{stamp(T0 + timedelta(hours=3))}",
    )
    assert len(since["entry"]) == 2
    both = await client.get(
        "/fhir/AuditEvent",
        params=[("date", "ge2026-11-25T10:00:00Z"), ("date", "lt2026-11-25T12:00:00Z")],
        headers=world.reader_headers,
    )
    assert [e["resource"]["entity"][1]["what"]["reference"] for e in both.json()["entry"]] == [
        "Observation/obs-2",
        "Observation/obs-1",
    ]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/fhir/AuditEvent/no-such-event", 404, "not-found"),
        ("/fhir/AuditEvent?date=yesterday", 400, "invalid"),
        ("/fhir/AuditEvent?date=ne2026-11-25", 400, "invalid"),
        ("/fhir/AuditEvent?date=", 400, "invalid"),
        ("/fhir/AuditEvent?patient=", 400, "invalid"),
        ("/fhir/AuditEvent?patient=Device/1", 400, "invalid"),
        ("/fhir/AuditEvent?_count=-1", 400, "invalid"),
    ],
)
async def test_bad_audit_event_requests_are_operation_outcomes(
    client: httpx.AsyncClient, world: World, path: str, status: int, code: str
) -> None:
    response = await client.get(path, headers=world.reader_headers)
    assert response.status_code == status
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["code"] == code


async def test_an_unknown_audit_event_parameter_is_ignored_unless_strict(
    client: httpx.AsyncClient, world: World
) -> None:
    lenient = await client.get("/fhir/AuditEvent?agent=user-1", headers=world.reader_headers)
    assert lenient.status_code == 200 and "agent" not in lenient.json()["link"][0]["url"]
    strict = await client.get(
        "/fhir/AuditEvent?agent=user-1",
        headers={**world.reader_headers, "Prefer": "handling=strict"},
    )
    assert strict.status_code == 400 and strict.json()["issue"][0]["code"] == "invalid"


async def test_audit_events_need_a_valid_token(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    records = await fill(database, 1)
    for headers in ({}, {"Authorization": "Bearer mmt_wrong"}, world.device_headers):
        for path in (f"/fhir/AuditEvent/{records[0].id}", "/fhir/AuditEvent"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401
            assert records[0].id not in response.text


async def test_fhirpy_lists_who_looked_at_a_patients_record(
    database_url: str, database: Database, world: World, tmp_path: Path
) -> None:
    async with database.write() as conn:
        for n in range(12):
            await AuditLog(conn).append(
                entry(n, patient_id=world.patient_id), at=T0 + timedelta(minutes=n)
            )
    with live_server(database_url, tmp_path / "server.log") as server:
        client = AsyncFHIRClient(f"{server.base_url}/fhir", authorization=f"Bearer {world.token}")
        events = await (
            client.resources("AuditEvent").search(patient=world.patient_id).limit(5).fetch_all()
        )
    assert len(events) == 12
    assert [e.recorded for e in events] == sorted((e.recorded for e in events), reverse=True)
    assert {e.agent[0].who.display for e in events} == {f"Dr Zoë Ångström {k}" for k in range(3)}
