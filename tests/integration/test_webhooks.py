"""Webhook delivery of FHIR Subscriptions, end to end: the real app and database, a real HTTPS
receiver (uvicorn, certificate from our dev CA), signatures checked as a receiver would."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.flag import Flag
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select
from sqlalchemy.engine import Engine

from medmesh import provisioning, wiring
from medmesh.access.erasure import erase_patient
from medmesh.access.identity.credentials import hash_secret
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.events.bus import InProcessBus
from medmesh.events.model import ALERT, DEVICE, READINGS, Event
from medmesh.services import Services
from medmesh.store.database import Database
from medmesh.store.schema import api_tokens
from medmesh.store.subscriptions import ACTIVE, StoredSubscription, Subscriptions
from medmesh.store.webhook_deliveries import Delivery, WebhookDeliveries
from medmesh.webhooks.dispatcher import WebhookDispatcher
from medmesh.webhooks.policy import WebhookPolicy
from medmesh.webhooks.signing import verify
from tests.conftest import World
from tests.helpers import BASE_TIME, reading
from tests.live_server import live_server
from tests.webhook_receiver import Certificates, Received, Receiver

INGEST = "/ingest/v1/readings"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
StartReceiver = Callable[..., Receiver]


def _settings(database_url: str, certificates: Certificates, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        auto_migrate=False,
        webhook_ca_file=str(certificates.trusted / "ca.crt"),
        webhook_retry_seconds=[0.05],
        webhook_max_attempts=3,
        webhook_timeout_seconds=5,
        **extra,
    )


@pytest.fixture
async def platform(
    database_url: str, webhook_certificates: Certificates
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The real app, in-process, trusting the test CA, with retries a few ms apart."""
    app = create_app(_settings(database_url, webhook_certificates))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http, app


def _subscription(criteria: str, endpoint: str, full: bool = True) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if full:
        channel["payload"] = "application/fhir+json"
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "remote monitoring",
        "criteria": criteria,
        "channel": channel,
    }


async def _subscribe(
    http: httpx.AsyncClient, world: World, criteria: str, endpoint: str, full: bool = True
) -> tuple[str, str]:
    response = await http.post(
        "/fhir/Subscription",
        content=orjson.dumps(_subscription(criteria, endpoint, full)),
        headers={**world.reader_headers, "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.headers["X-Medmesh-Signing-Secret"]


async def _post_readings(http: httpx.AsyncClient, world: World, *readings: dict[str, Any]) -> None:
    response = await http.post(
        INGEST, json={"readings": list(readings)}, headers=world.device_headers
    )
    assert response.status_code == 202, response.text


def _database(app: FastAPI) -> Database:
    database: Database = app.state.services.database
    return database


async def _deliveries(database: Database, subscription_id: str) -> list[Delivery]:
    async with database.read() as conn:
        return await WebhookDeliveries(conn).for_subscription(subscription_id)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _verified(request: Received, secret: str) -> dict[str, Any]:
    """The notification, after checking its signature as a receiver does."""
    headers = request.headers
    assert verify(
        secret,
        headers["x-medmesh-timestamp"],
        request.body,
        headers["x-medmesh-signature"],
        now=time.time(),
    )
    assert headers["content-type"] == "application/fhir+json"
    bundle: dict[str, Any] = orjson.loads(request.body)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Parameters"
    return bundle


async def test_new_readings_reach_the_subscriber_as_a_signed_bundle_of_their_observations(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    receiver = start_receiver(webhook_certificates.trusted)
    subscription_id, secret = await _subscribe(
        http, world, f"Observation?patient={world.patient_id}", receiver.url
    )
    later = BASE_TIME + timedelta(minutes=1)
    await _post_readings(http, world, reading("b", value=72, at=later), reading("a", value=71))

    (request,) = await receiver.wait_for(1)
    bundle = _verified(request, secret)
    status = bundle["entry"][0]["resource"]["parameter"]
    assert {
        "name": "subscription",
        "valueReference": {"reference": f"Subscription/{subscription_id}"},
    } in status
    assert request.headers["x-medmesh-subscription-id"] == subscription_id
    observations = [e["resource"] for e in bundle["entry"][1:]]
    assert [o["valueQuantity"]["value"] for o in observations] == [71, 72]
    stored = (
        await http.get(
            "/fhir/Observation", params={"patient": world.patient_id}, headers=world.reader_headers
        )
    ).json()
    assert observations == [e["resource"] for e in stored["entry"]]
    assert not verify(
        secret,
        request.headers["x-medmesh-timestamp"],
        request.body + b" ",
        request.headers["x-medmesh-signature"],
        now=time.time(),
    )


@SQLITE_ONLY
async def test_code_criteria_notify_only_of_observations_with_that_code(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    receiver = start_receiver(webhook_certificates.trusted)
    criteria = f"Observation?patient=Patient/{world.patient_id}&code=http://loinc.org|59408-5"
    _, secret = await _subscribe(http, world, criteria, receiver.url)
    await _post_readings(http, world, reading("hr-1"))  # heart rate only: no notification
    await _post_readings(
        http,
        world,
        reading("hr-2"),
        reading("spo2-1", kind="oxygen-saturation", value=97, unit="%"),
    )

    (request,) = await receiver.wait_for(1)
    bundle = _verified(request, secret)
    (entry,) = bundle["entry"][1:]
    assert entry["resource"]["code"]["coding"][0]["code"] == "2708-6"
    assert entry["request"] == {"method": "POST", "url": "Observation"}
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1


async def test_a_failing_receiver_gets_the_delivery_on_the_third_attempt(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, app = platform
    receiver = start_receiver(webhook_certificates.trusted, (500, 503))
    subscription_id, secret = await _subscribe(
        http, world, f"Observation?patient={world.patient_id}", receiver.url
    )
    await _post_readings(http, world, reading("r-1"))

    requests = await receiver.wait_for(3)
    assert len({r.headers["x-medmesh-event-id"] for r in requests}) == 1
    for request in requests:
        _verified(request, secret)

    async def delivered() -> bool:
        (delivery,) = await _deliveries(_database(app), subscription_id)
        return delivery.status == "delivered"

    await _eventually(delivered)
    (delivery,) = await _deliveries(_database(app), subscription_id)
    assert delivery.attempts == 3
    assert delivery.last_error is None


@SQLITE_ONLY
async def test_a_receiver_that_never_answers_does_not_hold_up_the_others(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    with socket.socket() as black_hole:  # accepts connections (backlog), never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        port = black_hole.getsockname()[1]
        criteria = f"Observation?patient={world.patient_id}"
        await _subscribe(http, world, criteria, f"https://127.0.0.1:{port}/hook")
        for i in range(20):  # more deliveries to the black hole than the sender has slots
            await _post_readings(http, world, reading(f"r-{i}"))
        receiver = start_receiver(webhook_certificates.trusted)
        await _subscribe(http, world, criteria, receiver.url)
        started = time.monotonic()
        await _post_readings(http, world, reading("r-last"))
        await receiver.wait_for(1)
        # Each POST to the black hole waits out its 5 s timeout; the others go meanwhile.
        assert time.monotonic() - started < 3


@SQLITE_ONLY
async def test_a_receiver_with_a_certificate_from_another_ca_is_never_sent_a_notification(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, app = platform
    impostor = start_receiver(webhook_certificates.rogue)
    subscription_id, _ = await _subscribe(
        http, world, f"Observation?patient={world.patient_id}", impostor.url
    )
    await _post_readings(http, world, reading("r-1"))

    async def failed() -> bool:
        deliveries = await _deliveries(_database(app), subscription_id)
        return bool(deliveries) and deliveries[0].status == "failed"

    await _eventually(failed)
    (delivery,) = await _deliveries(_database(app), subscription_id)
    assert delivery.attempts == 3
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("TLS certificate verification failed")
    assert impostor.requests == []


async def test_deleting_a_subscription_turns_it_off_and_stops_its_notifications(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, app = platform
    receiver = start_receiver(webhook_certificates.trusted)
    subscription_id, secret = await _subscribe(
        http, world, f"Observation?patient={world.patient_id}", receiver.url, full=False
    )
    await _post_readings(http, world, reading("before"))
    (request,) = await receiver.wait_for(1)
    bundle = _verified(request, secret)
    assert len(bundle["entry"]) == 1  # no payload asked for: an empty notification

    response = await http.delete(
        f"/fhir/Subscription/{subscription_id}", headers=world.reader_headers
    )
    assert response.status_code == 200
    assert response.json()["status"] == "off"
    read = await http.get(f"/fhir/Subscription/{subscription_id}", headers=world.reader_headers)
    assert read.json()["status"] == "off"
    await _post_readings(http, world, reading("after"))
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1
    assert len(await _deliveries(_database(app), subscription_id)) == 1


@SQLITE_ONLY
async def test_alerts_reach_flag_subscribers_as_flags(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, app = platform
    receiver = start_receiver(webhook_certificates.trusted)
    _, secret = await _subscribe(http, world, f"Flag?patient={world.patient_id}", receiver.url)
    alert_id = str(uuid.uuid4())
    alert = {
        "id": alert_id,
        "patient_id": world.patient_id,
        "rule": "spo2-low",
        "severity": "urgent",
        "status": "open",
        "title": "Oxygen saturation low",
    }
    await app.state.services.bus.publish(Event(ALERT, "someone-else", {**alert, "id": "x"}))
    await app.state.services.bus.publish(Event(ALERT, world.patient_id, alert))

    (request,) = await receiver.wait_for(1)
    bundle = _verified(request, secret)
    (entry,) = bundle["entry"][1:]
    flag = entry["resource"]
    Flag.model_validate(flag)
    assert flag["id"] == alert_id
    assert flag["status"] == "active"
    assert flag["subject"] == {"reference": f"Patient/{world.patient_id}"}
    assert entry["request"] == {"method": "PUT", "url": f"Flag/{alert_id}"}


@SQLITE_ONLY
async def test_a_subscription_whose_deliveries_keep_failing_is_put_in_error(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    receiver = start_receiver(webhook_certificates.trusted, (410,) * 10)
    subscription_id, _ = await _subscribe(
        http, world, f"Observation?patient={world.patient_id}", receiver.url
    )
    for i in range(5):  # a 4xx other than 429 fails a delivery at once; five in a row: error
        await _post_readings(http, world, reading(f"r-{i}"))
        await receiver.wait_for(i + 1)

    async def in_error() -> bool:
        response = await http.get(
            f"/fhir/Subscription/{subscription_id}", headers=world.reader_headers
        )
        return bool(response.json()["status"] == "error")

    await _eventually(in_error)
    response = await http.get(f"/fhir/Subscription/{subscription_id}", headers=world.reader_headers)
    assert "HTTP 410" in response.json()["error"]
    await _post_readings(http, world, reading("after"))
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 5


async def _token_id(database: Database, token: str) -> str:
    """The stored id of a bearer token: a subscription belongs to the token that made it."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(api_tokens.c.id).where(api_tokens.c.token_hash == hash_secret(token))
        )
        return str(rows.scalar_one())


async def test_two_dispatchers_on_one_database_deliver_each_event_once(
    database_url: str,
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    receiver = start_receiver(webhook_certificates.trusted)
    postgres = database_url.startswith("postgresql")
    # PostgreSQL: two full sets of services, as two processes would run, sharing events through
    # LISTEN/NOTIFY. SQLite (one process): a second dispatcher on the same bus and database.
    settings = _settings(
        database_url, webhook_certificates, event_bus="postgres" if postgres else "memory"
    )
    first = await Services.start(settings)
    second: Services | None = None
    extra_database = Database(database_url)
    extra: WebhookDispatcher | None = None
    try:
        if postgres:
            second = await Services.start(settings)
        else:
            extra = WebhookDispatcher(extra_database, first.bus, wiring.webhook_policy(settings))
            await extra.start()
        async with first.database.write() as conn:
            await Subscriptions(conn).add(
                StoredSubscription(
                    id="sub-1",
                    criteria=f"Observation?patient={world.patient_id}",
                    endpoint=receiver.url,
                    signing_secret="s3cret",
                    status=ACTIVE,
                    resource={},
                    created_at=datetime.now(UTC),
                    created_by=await _token_id(first.database, world.token),
                )
            )
        events = [
            Event(READINGS, world.patient_id, {"count": 0, "codes": [], "observations": []})
            for _ in range(10)
        ]
        for event in events:
            await first.bus.publish(event)
        requests = await receiver.wait_for(10)
        await asyncio.sleep(0.5)  # time for any duplicate to arrive
        assert len(receiver.requests) == 10
        assert sorted(r.headers["x-medmesh-event-id"] for r in requests) == sorted(
            e.id for e in events
        )
        deliveries = await _deliveries(first.database, "sub-1")
        assert [d.status for d in deliveries] == ["delivered"] * 10
    finally:
        if extra is not None:
            await extra.stop()
        await extra_database.dispose()
        if second is not None:
            await second.stop()
        await first.stop()


async def _add_subscription(
    database: Database, world: World, subscription_id: str, criteria: str
) -> None:
    async with database.write() as conn:
        await Subscriptions(conn).add(
            StoredSubscription(
                id=subscription_id,
                criteria=criteria,
                endpoint="https://127.0.0.1:9/hook",
                signing_secret="s3cret",
                status=ACTIVE,
                resource={},
                created_at=datetime.now(UTC),
                created_by=await _token_id(database, world.token),
            )
        )


async def test_events_waiting_together_are_matched_against_one_read_of_the_subscriptions(
    database: Database, world: World
) -> None:
    """Under load a commit's events wait together: each is still queued for exactly the
    subscriptions it matches, and the active subscriptions are read once for all of them."""
    await _add_subscription(database, world, "sub-obs", f"Observation?patient={world.patient_id}")
    await _add_subscription(database, world, "sub-flag", "Flag")
    other = await provisioning.create_patient(database, family="Other", given="O", identifier="O1")
    readings = Event(READINGS, world.patient_id, {"count": 1, "codes": [], "observations": []})
    alert = Event(ALERT, world.patient_id, {"id": "a-1"})
    elsewhere = Event(READINGS, other.id, {"count": 1, "codes": [], "observations": []})
    device = Event(DEVICE, None, {"device_id": "d-1", "online": True})
    dispatcher = WebhookDispatcher(database, InProcessBus(), WebhookPolicy())
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "FROM subscriptions" in statement:
            reads.append(statement)

    sqlalchemy_event.listen(Engine, "before_cursor_execute", count)
    try:
        added = await dispatcher.dispatch_many([readings, alert, elsewhere, device])
    finally:
        sqlalchemy_event.remove(Engine, "before_cursor_execute", count)
    assert added == 2
    assert len(reads) == 1
    assert [d.event_id for d in await _deliveries(database, "sub-obs")] == [readings.id]
    assert [d.event_id for d in await _deliveries(database, "sub-flag")] == [alert.id]


async def test_an_event_that_cannot_be_queued_costs_only_itself(
    database: Database, world: World
) -> None:
    """An alert of a patient erased since it was published cannot be sealed for delivery;
    the events published with it are queued all the same."""
    await _add_subscription(database, world, "sub-flag", "Flag")
    gone = await provisioning.create_patient(database, family="Gone", given="G", identifier="G1")
    await erase_patient(database, gone.id, reason="patient request", requested_by="admin-1")
    bus = InProcessBus()
    dispatcher = WebhookDispatcher(database, bus, WebhookPolicy())
    await dispatcher.start()
    try:
        events = [
            Event(ALERT, world.patient_id, {"id": "a-1"}),
            Event(ALERT, gone.id, {"id": "a-2"}),
            Event(ALERT, world.patient_id, {"id": "a-3"}),
        ]
        await bus.publish_many(events)  # waiting together when the dispatcher wakes

        async def both_queued() -> bool:
            return len(await _deliveries(database, "sub-flag")) == 2

        await _eventually(both_queued)
    finally:
        await dispatcher.stop()
    delivered = sorted(d.event_id for d in await _deliveries(database, "sub-flag"))
    assert delivered == sorted([events[0].id, events[2].id])


async def test_two_server_processes_notify_each_reading_exactly_once(
    database_url: str,
    world: World,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
    tmp_path: Path,
) -> None:
    """Two `medmesh serve` processes on one PostgreSQL, events crossing on LISTEN/NOTIFY:
    readings posted to either reach the subscriber once each, never twice, never not at all."""
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL; SQLite deployments are one process")
    receiver = start_receiver(webhook_certificates.trusted)
    env = {
        "MEDMESH_EVENT_BUS": "postgres",
        "MEDMESH_WEBHOOK_CA_FILE": str(webhook_certificates.trusted / "ca.crt"),
        "MEDMESH_WEBHOOK_RETRY_SECONDS": "[0.05]",
    }
    with (
        live_server(database_url, tmp_path / "a.log", env=env) as first,
        live_server(database_url, tmp_path / "b.log", env=env) as second,
    ):
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=10) as to_first,
            httpx.AsyncClient(base_url=second.base_url, timeout=10) as to_second,
        ):
            _, secret = await _subscribe(
                to_first, world, f"Observation?patient={world.patient_id}", receiver.url
            )
            for i in range(6):  # one at a time: each request its own batch, its own event
                at = BASE_TIME + timedelta(minutes=i)
                await _post_readings(
                    (to_first, to_second)[i % 2], world, reading(f"r-{i}", value=60 + i, at=at)
                )
            requests = await receiver.wait_for(6, timeout=30)
            await asyncio.sleep(1.0)  # time for any duplicate to arrive
    assert len(receiver.requests) == 6
    assert len({r.headers["x-medmesh-event-id"] for r in requests}) == 6
    values = [
        entry["resource"]["valueQuantity"]["value"]
        for request in requests
        for entry in _verified(request, secret)["entry"][1:]
    ]
    assert sorted(values) == [60, 61, 62, 63, 64, 65]
