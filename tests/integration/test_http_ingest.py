"""HTTP ingest through the real app and the real database, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetters
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.schema import dead_letters, observations
from tests.conftest import World, make_world
from tests.helpers import BASE_TIME, minute_series, reading

URL = "/ingest/v1/readings"


async def _count(database: Database, table=observations) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_valid_batch_is_stored_and_acknowledged(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = minute_series(5) + [
        reading("bp-1", "blood-pressure", {"systolic": 128, "diastolic": 82}, "mm[Hg]")
    ]
    response = await client.post(URL, json={"readings": batch}, headers=world.device_headers)
    assert response.status_code == 202
    assert response.json() == {"accepted": 6, "duplicates": 0, "rejected": []}
    assert await _count(database) == 6


async def test_same_batch_sent_twice_is_stored_once(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = {"readings": minute_series(10)}
    first = await client.post(URL, json=batch, headers=world.device_headers)
    second = await client.post(URL, json=batch, headers=world.device_headers)
    assert first.json()["accepted"] == 10
    assert second.status_code == 202
    assert second.json() == {"accepted": 0, "duplicates": 10, "rejected": []}
    assert await _count(database) == 10


async def test_repeated_message_id_within_a_batch_is_stored_once(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = {"readings": [reading("same"), reading("same", value=80)]}
    response = await client.post(URL, json=batch, headers=world.device_headers)
    assert response.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert await _count(database) == 1


async def test_each_bad_reading_gets_its_reason_and_the_good_ones_are_stored(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    future = datetime.now(UTC) + timedelta(hours=2)
    batch = [
        reading("ok-1"),
        reading("unknown", kind="blood-alcohol", value=0.1, unit="%"),
        reading("bad-unit", value=72, unit="kg"),
        reading("implausible", value=720),
        reading("future", at=future),
        {"id": "no-time", "type": "heart-rate", "value": 70, "unit": "/min"},
        "not an object",
        reading("bp-missing", "blood-pressure", {"systolic": 120}, "mm[Hg]"),
        reading("ok-2", kind="body-temperature", value=98.6, unit="[degF]"),
    ]
    response = await client.post(URL, json={"readings": batch}, headers=world.device_headers)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    reasons = {(r["index"], r["id"], r["reason"]) for r in body["rejected"]}
    assert reasons == {
        (1, "unknown", "unknown-code"),
        (2, "bad-unit", "unit-not-convertible"),
        (3, "implausible", "implausible-value"),
        (4, "future", "future-timestamp"),
        (5, "no-time", "malformed"),
        (6, None, "malformed"),
        (7, "bp-missing", "malformed"),
    }
    detail = {r["id"]: r["detail"] for r in body["rejected"]}
    assert "time" in detail["no-time"]
    assert "720" not in detail["implausible"]  # the reason names the range, not the value
    assert await _count(database) == 2
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(world.device_id)
    assert sorted(d.reason for d in letters) == sorted(r[2] for r in reasons)
    assert all(d.channel == "http" and d.payload for d in letters)


async def test_units_are_converted_to_the_canonical_unit(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = [
        reading("t", "body-temperature", 98.6, "[degF]"),
        reading("g", "blood-glucose", 5.5, "mmol/L"),
        reading("w", "body-weight", 154, "[lb_av]"),
    ]
    await client.post(URL, json={"readings": batch}, headers=world.device_headers)
    async with database.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=world.patient_id))
    stored = {o.code: (round(o.values[0].value, 1), o.values[0].unit) for o in found}
    assert stored == {
        "8310-5": (37.0, "Cel"),
        "41653-7": (99.1, "mg/dL"),
        "29463-7": (69.9, "kg"),
    }


async def test_malformed_body_is_refused_and_dead_lettered(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    for body in (b"{not json", b'{"readings": 5}', b"[]"):
        response = await client.post(URL, content=body, headers=world.device_headers)
        assert response.status_code == 400
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "invalid"
    assert await _count(database, dead_letters) == 3
    assert await _count(database) == 0


async def test_oversized_body_is_refused_with_413(client: httpx.AsyncClient, world: World) -> None:
    response = await client.post(URL, content=b"x" * 1_000_001, headers=world.device_headers)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


async def test_too_many_readings_in_one_batch_are_refused(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    response = await client.post(
        URL, json={"readings": minute_series(1001)}, headers=world.device_headers
    )
    assert response.status_code == 400
    assert "1000" in response.json()["issue"][0]["diagnostics"]
    assert await _count(database) == 0


async def test_writes_without_a_valid_device_credential_are_refused(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = {"readings": minute_series(1)}
    anonymous = await client.post(URL, json=batch)
    forged = await client.post(URL, json=batch, headers={"Authorization": "Bearer mmd_forged"})
    clinician = await client.post(URL, json=batch, headers=world.reader_headers)
    for response in (anonymous, forged, clinician):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["resourceType"] == "OperationOutcome"
    assert await _count(database) == 0


async def test_a_rotated_device_credential_stops_working_at_once_though_it_was_known(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    """The app remembers credentials it has seen valid; a rotation committed elsewhere (here a
    connection of its own, as another process would) still refuses the old secret on the very
    next request, stores nothing from it, and dead-letters nothing for it."""
    first = await client.post(
        URL, json={"readings": minute_series(2)}, headers=world.device_headers
    )
    assert first.status_code == 202
    rotated = await provisioning.rotate_device_secret(database, world.device_id)
    late = [reading("after-rotation", at=BASE_TIME + timedelta(hours=1))]
    old = await client.post(URL, json={"readings": late}, headers=world.device_headers)
    assert old.status_code == 401
    assert old.json()["resourceType"] == "OperationOutcome"
    malformed = await client.post(URL, content=b"{not json", headers=world.device_headers)
    assert malformed.status_code == 401
    assert await _count(database) == 2
    assert await _count(database, dead_letters) == 0
    new = await client.post(
        URL, json={"readings": late}, headers={"Authorization": f"Bearer {rotated.secret}"}
    )
    assert new.status_code == 202 and new.json()["accepted"] == 1


async def test_reading_goes_to_the_patient_the_device_was_assigned_to_at_that_time(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    other = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-2"
    )
    handover = BASE_TIME + timedelta(minutes=30)
    await provisioning.assign_device(database, world.device_id, other.id, handover)
    response = await client.post(
        URL, json={"readings": minute_series(60)}, headers=world.device_headers
    )
    assert response.json()["accepted"] == 60
    async with database.read() as conn:
        rows = (
            await conn.execute(
                select(observations.c.patient_id, func.count()).group_by(observations.c.patient_id)
            )
        ).all()
    assert dict(rows) == {world.patient_id: 30, other.id: 30}


async def test_reading_from_before_any_assignment_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    early = reading("early", at=datetime(2019, 6, 1, tzinfo=UTC))
    response = await client.post(URL, json={"readings": [early]}, headers=world.device_headers)
    assert response.json()["rejected"][0]["reason"] == "no-patient-assigned"


async def test_one_device_cannot_write_for_another(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    second = await make_world(database, identifier="MRN-9")
    await client.post(URL, json={"readings": [reading("x")]}, headers=second.device_headers)
    async with database.read() as conn:
        owners = (
            await conn.execute(select(observations.c.device_id, observations.c.patient_id))
        ).all()
    assert owners == [(second.device_id, second.patient_id)]


async def test_concurrent_resends_are_reported_as_stored_exactly_once(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    import asyncio

    batch = {"readings": minute_series(300)}
    receipts = await asyncio.gather(
        *(client.post(URL, json=batch, headers=world.device_headers) for _ in range(4))
    )
    bodies = [r.json() for r in receipts]
    assert sum(b["accepted"] for b in bodies) == 300
    assert sum(b["duplicates"] for b in bodies) == 900
    assert await _count(database) == 300
