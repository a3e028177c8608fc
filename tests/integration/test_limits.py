"""Request size limits and per-client rate limits, through the real app and database: a refused
request stores nothing, its answer is an OperationOutcome without the data sent, and one
client's excess does not hold up another."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.store.database import Database
from medmesh.store.schema import dead_letters, observations
from tests.accounts_fixtures import make_clinician, sign_in
from tests.conftest import World
from tests.helpers import reading
from tests.limits_fixtures import SECRET_VALUE, http_client, running_app
from tests.live_server import live_server

INGEST = "/ingest/v1/readings"
LIMIT = 2000  # bytes, for device batches in these tests


async def _count(database: Database, table=observations) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _batch(count: int) -> bytes:
    body = {"readings": [reading(f"big-{i}", value=SECRET_VALUE) for i in range(count)]}
    return json.dumps(body).encode()


def _assert_refusal(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert str(SECRET_VALUE) not in response.text
    assert "Doe" not in response.text and "MRN-1" not in response.text


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_app(database_url, max_body_bytes=LIMIT, max_request_body_bytes=500) as app,
        http_client(app) as http,
    ):
        yield http


# --- body size ------------------------------------------------------------------------------


async def test_batch_declared_larger_than_the_limit_is_refused_and_nothing_stored(
    limited: httpx.AsyncClient, world: World, database: Database
) -> None:
    body = _batch(40)
    assert len(body) > LIMIT
    response = await limited.post(
        INGEST, content=body, headers={**world.device_headers, "Content-Type": "application/json"}
    )
    _assert_refusal(response, 413, "too-costly")
    assert f"larger than {LIMIT} bytes" in response.json()["issue"][0]["diagnostics"]
    assert await _count(database) == 0
    assert await _count(database, dead_letters) == 0


async def test_batch_streamed_without_a_length_is_refused_once_past_the_limit(
    limited: httpx.AsyncClient, world: World, database: Database
) -> None:
    body = _batch(40)
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            sent.append(start)
            yield body[start : start + 500]

    response = await limited.post(
        INGEST,
        content=chunks(),
        headers={**world.device_headers, "Content-Type": "application/json"},
    )
    _assert_refusal(response, 413, "too-costly")
    # Reading stopped at the chunk that passed the limit; the rest was never taken in.
    assert len(sent) == LIMIT // 500 + 1 < len(range(0, len(body), 500))
    assert await _count(database) == 0
    assert await _count(database, dead_letters) == 0


async def test_batch_within_the_device_limit_is_stored(
    limited: httpx.AsyncClient, world: World, database: Database
) -> None:
    body = _batch(8)
    assert 500 < len(body) <= LIMIT  # over the general limit, within the device batch limit
    response = await limited.post(
        INGEST, content=body, headers={**world.device_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 202
    assert await _count(database) == 8


async def test_other_routes_have_the_smaller_general_limit(
    limited: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    plan = {"thresholds": {}, "primary_clinician": "x" * 600}
    response = await limited.put(
        f"/api/v1/patients/{world.patient_id}/care-plan", json=plan, headers=world.reader_headers
    )
    _assert_refusal(response, 413, "too-costly")
    assert "larger than 500 bytes" in response.text

    async def chunks() -> AsyncIterator[bytes]:  # no length: FastAPI's body parser meets it
        body = json.dumps(plan).encode()
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    with caplog.at_level(logging.ERROR):
        streamed = await limited.put(
            f"/api/v1/patients/{world.patient_id}/care-plan",
            content=chunks(),
            headers={**world.reader_headers, "Content-Type": "application/json"},
        )
    _assert_refusal(streamed, 413, "too-costly")
    assert not caplog.records  # refused as a limit, not logged as an unexpected error


async def test_overlong_url_and_too_many_headers_are_refused(
    limited: httpx.AsyncClient, world: World
) -> None:
    long_url = await limited.get(
        "/fhir/Observation", params={"code": "x" * 9000}, headers=world.reader_headers
    )
    _assert_refusal(long_url, 414, "too-long")
    crowded = {**world.reader_headers, **{f"x-extra-{i}": "1" for i in range(120)}}
    many_headers = await limited.get("/fhir/metadata", headers=crowded)
    _assert_refusal(many_headers, 431, "too-long")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_real_server_refuses_a_chunked_body_past_the_limit(
    database_url: str, world: World, database: Database, tmp_path: Path
) -> None:
    """Through uvicorn's HTTP parser, with the default 1 MB device batch limit."""
    body = _batch(10_000)
    assert len(body) > 1_000_000

    def chunks():  # a generator: httpx sends it chunked, without Content-Length
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with live_server(database_url, tmp_path / "server.log") as server:
        response = httpx.post(
            f"{server.base_url}{INGEST}",
            content=chunks(),
            headers={**world.device_headers, "Content-Type": "application/json"},
            timeout=30,
        )
    assert "content-length" not in response.request.headers
    _assert_refusal(response, 413, "too-costly")
    assert await _count(database) == 0


# --- rate limits ----------------------------------------------------------------------------


@pytest.fixture
async def strict(database_url: str) -> AsyncIterator[object]:
    """Budgets of 3 requests, refilled at one a minute: a fourth request at once is refused."""
    async with running_app(
        database_url,
        rate_limit_client_burst=3,
        rate_limit_client_per_minute=1,
        rate_limit_device_burst=3,
        rate_limit_device_per_minute=1,
        rate_limit_anonymous_burst=3,
        rate_limit_anonymous_per_minute=1,
    ) as app:
        yield app


async def test_api_client_over_its_budget_waits_while_another_is_served(
    strict: object, world: World, database: Database
) -> None:
    other_token = await provisioning.issue_service_token(
        database, name="other", scopes="system/*.rs"
    )
    async with http_client(strict) as http:  # type: ignore[arg-type]
        url = f"/fhir/Patient/{world.patient_id}"
        for _ in range(3):
            assert (await http.get(url, headers=world.reader_headers)).status_code == 200
        refused = await http.get(url, headers=world.reader_headers)
        _assert_refusal(refused, 429, "throttled")
        assert int(refused.headers["retry-after"]) >= 1
        other = await http.get(url, headers={"Authorization": f"Bearer {other_token}"})
        assert other.status_code == 200
        assert other.json()["name"][0]["family"] == "Doe"


async def test_device_over_its_budget_does_not_hold_up_api_clients(
    strict: object, world: World, database: Database
) -> None:
    async with http_client(strict) as http:  # type: ignore[arg-type]
        for i in range(3):
            batch = {"readings": [reading(f"m-{i}")]}
            sent = await http.post(INGEST, json=batch, headers=world.device_headers)
            assert sent.status_code == 202
        refused = await http.post(
            INGEST,
            json={"readings": [reading("m-x", value=SECRET_VALUE)]},
            headers=world.device_headers,
        )
        _assert_refusal(refused, 429, "throttled")
        assert "retry-after" in refused.headers
        assert await _count(database) == 3
        metadata = await http.get("/fhir/metadata", headers=world.reader_headers)
        assert metadata.status_code == 200


async def test_unauthenticated_requests_are_limited_per_address(strict: object) -> None:
    async with (
        http_client(strict, "127.0.0.2") as first,  # type: ignore[arg-type]
        http_client(strict, "127.0.0.3") as second,  # type: ignore[arg-type]
    ):
        for _ in range(3):
            assert (await first.get("/fhir/metadata")).status_code == 200
        _assert_refusal(await first.get("/fhir/metadata"), 429, "throttled")
        assert (await second.get("/fhir/metadata")).status_code == 200
        # Static assets and the health check are not limited.
        assert (await first.get("/static/css/medmesh.css")).status_code == 200
        assert (await first.get("/healthz")).status_code == 200


async def test_made_up_tokens_spend_the_address_budget_but_not_a_known_clients(
    strict: object, world: World
) -> None:
    async with http_client(strict, "127.0.0.4") as http:  # type: ignore[arg-type]
        # The real token is accepted once, so it no longer depends on its address's budget.
        assert (await http.get("/fhir/metadata", headers=world.reader_headers)).status_code == 200
        for attempt in range(3):
            guess = {"Authorization": f"Bearer mmt_guess{attempt}"}
            assert (await http.get("/fhir/Patient", headers=guess)).status_code == 401
        refused = await http.get("/fhir/Patient", headers={"Authorization": "Bearer mmt_guess9"})
        _assert_refusal(refused, 429, "throttled")
        allowed = await http.get(f"/fhir/Patient/{world.patient_id}", headers=world.reader_headers)
        assert allowed.status_code == 200


async def test_signed_in_dashboard_user_has_a_budget_of_their_own(
    database_url: str, world: World, database: Database
) -> None:
    ada = await make_clinician(database, "dr.ada", "Dr Ada")
    grace = await make_clinician(database, "dr.grace", "Dr Grace")
    async with (
        running_app(
            database_url,
            rate_limit_client_burst=3,
            rate_limit_client_per_minute=1,
            rate_limit_anonymous_burst=20,
        ) as app,
        http_client(app, "127.0.0.5") as first,
        http_client(app, "127.0.0.5") as second,  # a colleague behind the same address
    ):
        await sign_in(first, ada)  # its last step, the home page, spends one of the three
        await sign_in(second, grace)
        for _ in range(2):
            assert (await first.get("/")).status_code == 200
        refused = await first.get("/")
        _assert_refusal(refused, 429, "throttled")
        assert (await second.get("/")).status_code == 200
