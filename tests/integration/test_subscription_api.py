"""The Subscription endpoints of the FHIR API: create, read, search, delete, and what they refuse.
Resources returned are validated with fhir.resources (R4B's Subscription is R4's)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.subscription import Subscription

from tests.conftest import World

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "remote monitoring",
        "criteria": "Flag",
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://receiver.example.org/hook",
            "payload": "application/fhir+json",
        },
    }
    for key, value in changes.items():
        if key.startswith("channel_"):
            body["channel"][key.removeprefix("channel_")] = value
        else:
            body[key] = value
    return {k: v for k, v in body.items() if v is not None}


async def _create(client: httpx.AsyncClient, world: World, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/fhir/Subscription",
        content=orjson.dumps(body),
        headers={**world.reader_headers, **FHIR_JSON},
    )


async def test_a_new_subscription_is_active_and_its_signing_secret_is_shown_once(
    client: httpx.AsyncClient, world: World
) -> None:
    criteria = f"Observation?patient={world.patient_id}&code=http://loinc.org|8867-4"
    response = await _create(client, world, _body(criteria=criteria))
    assert response.status_code == 201, response.text
    created = response.json()
    Subscription.model_validate(created)
    assert created["status"] == "active"
    assert created["criteria"] == criteria
    secret = response.headers["X-Medmesh-Signing-Secret"]
    assert len(secret) >= 40
    assert response.headers["Location"].endswith(f"/fhir/Subscription/{created['id']}")
    assert response.headers["Cache-Control"] == "no-store"

    read = await client.get(f"/fhir/Subscription/{created['id']}", headers=world.reader_headers)
    assert read.status_code == 200
    assert read.json() == created
    assert "X-Medmesh-Signing-Secret" not in read.headers
    assert secret not in read.text

    found = await client.get("/fhir/Subscription", headers=world.reader_headers)
    bundle = found.json()
    Bundle.model_validate(bundle)
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]
    assert secret not in found.text


async def test_subscriptions_are_found_by_status(client: httpx.AsyncClient, world: World) -> None:
    first = (await _create(client, world, _body())).json()["id"]
    second = (await _create(client, world, _body())).json()["id"]
    deleted = await client.delete(f"/fhir/Subscription/{first}", headers=world.reader_headers)
    assert deleted.status_code == 200

    async def ids(status: str) -> list[str]:
        response = await client.get(
            "/fhir/Subscription", params={"status": status}, headers=world.reader_headers
        )
        assert response.status_code == 200
        return [e["resource"]["id"] for e in response.json()["entry"]]

    assert await ids("off") == [first]
    assert await ids("active") == [second]
    unknown = await client.get(
        "/fhir/Subscription", params={"status": "paused"}, headers=world.reader_headers
    )
    assert unknown.status_code == 400


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("changes", "field", "said"),
    [
        ({"channel_endpoint": "http://receiver.example.org/hook"}, "channel.endpoint", "https"),
        ({"channel_endpoint": "ftp://receiver.example.org/"}, "channel.endpoint", "https"),
        ({"channel_endpoint": "https://me:pw@receiver.example.org/"}, "channel.endpoint", "cred"),
        ({"channel_endpoint": "not a url"}, "channel.endpoint", "https"),
        ({"criteria": "Patient?name=Doe"}, "criteria", "Observation?patient=<id>"),
        ({"criteria": "Observation"}, "criteria", "need a patient"),
        ({"criteria": "Observation?patient=1&date=ge2026"}, "criteria", "supported"),
        ({"criteria": "Observation?patient=1&code=http://snomed.info/sct|1"}, "criteria", "LOINC"),
        ({"criteria": "Flag?patient=1&patient=2"}, "criteria", "once"),
        ({"status": "active"}, "status", "requested"),
        ({"reason": None}, "reason", "required"),
        ({"resourceType": "Patient"}, "resourceType", "Subscription"),
        ({"channel_type": "websocket"}, "channel.type", "rest-hook"),
        ({"channel_payload": "application/json"}, "channel.payload", "application/fhir+json"),
        ({"channel_header": ["Authorization: Bearer x"]}, "channel.header", "not supported"),
        ({"end": "2030-01-01T00:00:00Z"}, "end", "not supported"),
        ({"modifierExtension": [{"url": "x"}]}, "modifierExtension", "not permitted"),
    ],
)
async def test_an_invalid_subscription_is_refused_naming_the_field(
    client: httpx.AsyncClient, world: World, changes: dict[str, Any], field: str, said: str
) -> None:
    response = await _create(client, world, _body(**changes))
    assert response.status_code == 400, response.text
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert f"body.{field}" in diagnostics
    assert said in diagnostics
    assert "receiver.example.org" not in diagnostics  # what was wrong, not what was sent
    listed = await client.get("/fhir/Subscription", headers=world.reader_headers)
    assert "entry" not in listed.json() or not listed.json()["entry"]


async def test_an_unknown_patient_is_refused_like_one_the_subscriber_may_not_see(
    client: httpx.AsyncClient, world: World
) -> None:
    """403 either way: the answer does not tell whether the patient exists."""
    other = await _create(client, world, _body(criteria="Observation?patient=no-such-patient"))
    assert other.status_code == 403
    assert other.json()["issue"][0]["code"] == "forbidden"


@SQLITE_ONLY
@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]:8080/"]
)
async def test_plain_http_is_accepted_to_loopback_hosts_for_development(
    client: httpx.AsyncClient, world: World, endpoint: str
) -> None:
    response = await _create(client, world, _body(channel_endpoint=endpoint))
    assert response.status_code == 201, response.text


@SQLITE_ONLY
async def test_the_subscription_api_needs_a_reader_token(
    client: httpx.AsyncClient, world: World
) -> None:
    refused = await client.post("/fhir/Subscription", content=orjson.dumps(_body()))
    assert refused.status_code == 401
    assert (await client.get("/fhir/Subscription")).status_code == 401
    assert (await client.delete("/fhir/Subscription/x")).status_code == 401


@SQLITE_ONLY
async def test_an_unknown_subscription_is_not_found(
    client: httpx.AsyncClient, world: World
) -> None:
    read = await client.get("/fhir/Subscription/nope", headers=world.reader_headers)
    assert read.status_code == 404
    deleted = await client.delete("/fhir/Subscription/nope", headers=world.reader_headers)
    assert deleted.status_code == 404
