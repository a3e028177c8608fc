"""The event bus as clients see it: Server-Sent Events from /api/v1/events, in one process and
across processes through PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from medmesh.events.model import READINGS, Event, event_time
from medmesh.events.postgres import PostgresBus
from medmesh.store.database import Database
from medmesh.store.schema import audit_log
from tests.conftest import World, make_world
from tests.helpers import minute_series, reading
from tests.live_server import live_server


async def next_event(lines: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The data of the next SSE event of `kind` on an open stream."""

    async def read() -> dict[str, Any]:
        current = None
        async for line in lines:
            if line.startswith("event: "):
                current = line.removeprefix("event: ")
            elif line.startswith("data: ") and current == kind:
                event: dict[str, Any] = orjson.loads(line.removeprefix("data: "))
                return event
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


async def test_stored_readings_are_announced_to_a_connected_client(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
            http.stream(
                "GET",
                "/api/v1/events",
                params={"patient": world.patient_id},
                headers=world.reader_headers,
            ) as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            await http.post(
                "/ingest/v1/readings",
                json={"readings": minute_series(3)},
                headers=world.device_headers,
            )
            event = await next_event(lines, "readings")
    assert event["patient_id"] == world.patient_id
    data = event["data"]
    assert {k: v for k, v in data.items() if k != "observations"} == {
        "count": 3,
        "codes": ["8867-4"],
        "devices": [world.device_id],
    }
    assert len(data["observations"]) == 3  # their ids, for consumers to read through the store
    assert "value" not in str(event["data"])  # ids and codes only


async def test_the_event_stream_needs_a_token(database_url: str, tmp_path: Path) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        response = httpx.get(f"{server.base_url}/api/v1/events", timeout=5)
    assert response.status_code == 401


async def test_an_event_in_one_process_reaches_a_client_of_another(
    database_url: str, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL; SQLite deployments are one process")
    monkeypatch.setenv("MEDMESH_EVENT_BUS", "postgres")
    with (
        live_server(database_url, tmp_path / "a.log") as dashboard_side,
        live_server(database_url, tmp_path / "b.log") as ingest_side,
    ):
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream(
                "GET",
                f"{dashboard_side.base_url}/api/v1/events",
                headers=world.reader_headers,
            ) as stream,
        ):
            lines = stream.aiter_lines()
            await anext(lines)  # connected: the subscription is in place
            response = await http.post(
                f"{ingest_side.base_url}/ingest/v1/readings",
                json={"readings": minute_series(2)},
                headers=world.device_headers,
            )
            assert response.status_code == 202
            event = await next_event(lines, "readings")
    assert event["patient_id"] == world.patient_id
    assert event["data"]["count"] == 2


async def test_an_alert_raised_in_one_process_reaches_a_client_of_another(
    database_url: str, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL; SQLite deployments are one process")
    monkeypatch.setenv("MEDMESH_EVENT_BUS", "postgres")
    critical = reading("low-1", kind="blood-glucose", value=45, unit="mg/dL")
    with (
        live_server(database_url, tmp_path / "dashboard.log") as dashboard_side,
        live_server(database_url, tmp_path / "ingest.log") as ingest_side,
    ):
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream(
                "GET",
                f"{dashboard_side.base_url}/api/v1/events",
                headers=world.reader_headers,
            ) as stream,
        ):
            lines = stream.aiter_lines()
            await anext(lines)
            response = await http.post(
                f"{ingest_side.base_url}/ingest/v1/readings",
                json={"readings": [critical]},
                headers=world.device_headers,
            )
            assert response.status_code == 202
            event = await next_event(lines, "alert")
    assert event["patient_id"] == world.patient_id
    assert event["data"]["severity"] == "critical"
    assert event["data"]["status"] == "open"


async def test_own_only_subscribers_see_each_event_of_their_process_once_and_no_other(
    database_url: str,
) -> None:
    """What keeps the webhook dispatchers of several processes from each handling every event:
    an `own_only` subscriber gets the events its process published, once (not again when
    PostgreSQL echoes the notification), and none of another process's; an ordinary subscriber
    (a dashboard) gets every process's events, in order."""
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL; SQLite deployments are one process")
    here, there = PostgresBus(database_url), PostgresBus(database_url)
    await here.start()
    await there.start()
    try:
        own, everything = here.subscribe(own_only=True), here.subscribe()
        mine = [Event(READINGS, "p-1", {"count": i}) for i in range(3)]
        theirs = [Event(READINGS, "p-2", {"count": i}) for i in range(2)]
        await here.publish(mine[0])
        await there.publish_many(theirs)
        await here.publish_many(mine[1:])
        seen = [await asyncio.wait_for(everything.get(), 10) for _ in range(5)]
        # Every notification has arrived here, own ones included; the own_only queue is final.
        assert [e.id for e in seen] == [e.id for e in [mine[0], *theirs, *mine[1:]]]
        assert own.waiting == 3
        assert [(await own.get()).id for _ in range(3)] == [e.id for e in mine]
    finally:
        await here.stop()
        await there.stop()


async def _events_until(lines: Any, kind: str, timeout: float = 10.0) -> list[tuple[str, Any]]:
    """(kind, data) of each SSE event on an open stream, up to and including the first of
    `kind`; the connect frame's id is given as ("id", id)."""
    seen: list[tuple[str, Any]] = []

    async def read() -> list[tuple[str, Any]]:
        current = None
        async for line in lines:
            if line.startswith("id: ") and current is None and not seen:
                seen.append(("id", line.removeprefix("id: ")))
            elif line.startswith("event: "):
                current = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((str(current), orjson.loads(line.removeprefix("data: "))))
                if current == kind:
                    return seen
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


async def _alerts_of(http: httpx.AsyncClient, who: World) -> list[dict[str, Any]]:
    for _ in range(100):
        listed = await http.get(
            "/api/v1/alerts", params={"patient": who.patient_id}, headers=who.reader_headers
        )
        if alerts := listed.json()["alerts"]:
            return list(alerts)
        await asyncio.sleep(0.1)
    raise AssertionError("no alert was raised")


async def test_a_client_connecting_again_gets_the_alerts_opened_while_it_was_away(
    database: Database, database_url: str, world: World, tmp_path: Path
) -> None:
    other = await make_world(database, identifier="MRN-2")  # another clinician's patient
    low = {"kind": "blood-glucose", "value": 45, "unit": "mg/dL"}
    with live_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            async with http.stream("GET", "/api/v1/events", headers=world.reader_headers) as s:
                lines = s.aiter_lines()
                assert await anext(lines) == ": connected"
                cursor = (await anext(lines)).removeprefix("id: ")
            # Away: an alert for the clinician's patient and one for a patient of another.
            for who, message in ((world, "low-1"), (other, "low-2")):
                sent = await http.post(
                    "/ingest/v1/readings",
                    json={"readings": [reading(message, **low)]},  # type: ignore[arg-type]
                    headers=who.device_headers,
                )
                assert sent.status_code == 202
            raised = await _alerts_of(http, world)
            await _alerts_of(http, other)

            async def reconnect(headers: dict[str, str], n: int) -> list[tuple[str, Any]]:
                async with http.stream("GET", "/api/v1/events", headers=headers) as s:
                    lines = s.aiter_lines()
                    assert await anext(lines) == ": connected"  # subscribed: live comes after
                    await http.post(
                        "/ingest/v1/readings",
                        json={"readings": [reading(f"hr-{n}")]},
                        headers=world.device_headers,
                    )
                    return await _events_until(lines, "readings")

            resumed = await reconnect({**world.reader_headers, "Last-Event-ID": cursor}, 1)
            fresh = await reconnect(world.reader_headers, 2)
    alerts = [data for kind, data in resumed if kind == "alert"]
    assert [a["data"]["id"] for a in alerts] == [raised[0]["id"]]  # not the other patient's
    assert alerts[0]["data"]["status"] == "open"
    assert event_time(alerts[0]["id"]) is not None  # an id a client can resume from
    assert [kind for kind, _ in resumed[1:]] == ["alert", "readings"]  # missed, then live
    assert [kind for kind, _ in fresh[1:]] == ["readings"]  # no Last-Event-ID: no replay
    query = select(audit_log.c.patient_id).where(
        audit_log.c.resource_type == "Flag", audit_log.c.subtype == "stream"
    )
    async with database.read() as conn:
        audited = list((await conn.execute(query)).scalars())
    assert audited == [world.patient_id]  # the replay is on the record, once


async def test_what_a_stream_sent_just_before_it_ended_is_audited(
    database: Database, database_url: str, world: World, tmp_path: Path
) -> None:
    """A client that reads a few events and goes away before the stream's next recheck (5 s)
    still leaves a record of whose data it was sent."""
    query = select(audit_log.c.patient_id).where(
        audit_log.c.resource_type == "Observation", audit_log.c.subtype == "stream"
    )
    with live_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            async with http.stream("GET", "/api/v1/events", headers=world.reader_headers) as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == ": connected"
                await http.post(
                    "/ingest/v1/readings",
                    json={"readings": minute_series(2)},
                    headers=world.device_headers,
                )
                await next_event(lines, "readings")
            # Gone within a second of the event: no recheck came.
            for _ in range(50):
                async with database.read() as conn:
                    audited = list((await conn.execute(query)).scalars())
                if audited:
                    break
                await asyncio.sleep(0.1)
    assert audited == [world.patient_id]
