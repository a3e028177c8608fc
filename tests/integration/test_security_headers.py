"""Every kind of response carries the security headers: FHIR JSON, pages, event streams, static
assets and every error (404, 405, 413, 429, 500); only static assets may be cached."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from medmesh.http.headers import API_POLICY, PAGE_POLICY
from medmesh.store.database import Database
from tests.conftest import World
from tests.helpers import reading
from tests.limits_fixtures import SECRET_VALUE, http_client, running_app
from tests.live_server import live_server

ALWAYS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
}


def assert_secured(response: httpx.Response, *, cache: str = "no-store") -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert "camera=()" in response.headers["permissions-policy"]
    assert response.headers["cache-control"] == cache
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


async def test_fhir_resource_is_not_cached_and_may_not_load_anything(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.get(f"/fhir/Patient/{world.patient_id}", headers=world.reader_headers)
    assert response.status_code == 200
    assert_secured(response)
    assert response.headers["content-security-policy"] == API_POLICY


async def test_dashboard_page_gets_the_page_policy_without_inline_script_or_style(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_secured(response)
    policy = response.headers["content-security-policy"]
    assert policy == PAGE_POLICY
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy


async def test_vendored_library_may_be_cached_for_good_and_our_own_assets_revalidated(
    client: httpx.AsyncClient,
) -> None:
    vendored = await client.get("/static/vendor/htmx-2.0.11/htmx.min.js")
    assert vendored.status_code == 200
    assert_secured(vendored, cache="public, max-age=31536000, immutable")
    own = await client.get("/static/css/medmesh.css")
    assert own.status_code == 200
    assert_secured(own, cache="no-cache")


async def test_not_found_and_wrong_method_answers_carry_the_headers(
    client: httpx.AsyncClient, world: World
) -> None:
    missing = await client.get("/fhir/Patient/nobody", headers=world.reader_headers)
    assert_outcome(missing, 404, "not-found")
    assert_secured(missing)
    unknown_route = await client.get("/no/such/page")
    assert unknown_route.status_code == 404
    assert_secured(unknown_route)
    wrong_method = await client.delete("/fhir/metadata")
    assert_outcome(wrong_method, 405, "not-supported")
    assert_secured(wrong_method)


async def test_too_large_and_too_many_answers_carry_the_headers(
    database_url: str, world: World
) -> None:
    async with (
        running_app(
            database_url,
            max_body_bytes=500,
            rate_limit_client_burst=1,
            rate_limit_client_per_minute=1,  # no refill between the two requests, however slow
        ) as app,
        http_client(app) as http,
    ):
        big = {"readings": [reading(f"r{i}", value=SECRET_VALUE) for i in range(20)]}
        too_large = await http.post("/ingest/v1/readings", json=big, headers=world.device_headers)
        assert_outcome(too_large, 413, "too-costly")
        assert_secured(too_large)
        await http.get("/fhir/metadata", headers=world.reader_headers)
        too_many = await http.get("/fhir/metadata", headers=world.reader_headers)
        assert_outcome(too_many, 429, "throttled")
        assert_secured(too_many)


async def test_unexpected_error_answer_carries_the_headers(database_url: str, world: World) -> None:
    async with running_app(database_url) as app:

        async def broken() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/broken", broken)
        async with http_client(app) as http:
            response = await http.get("/broken", headers=world.reader_headers)
    assert_outcome(response, 500, "exception")
    assert_secured(response)
    assert "a bug" not in response.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_event_stream_carries_the_headers_and_is_not_cached(
    database_url: str, world: World, database: Database, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
            http.stream("GET", "/api/v1/events", headers=world.reader_headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert_secured(response)
            assert response.headers["content-security-policy"] == API_POLICY
