"""schemathesis drives every operation of the app's own OpenAPI document with a valid credential
(the clinician token; the device secret on ingest) and checks each answer: no server error,
and status, content type, headers and body as the document declares them.

A small budget for the suite; docs/security.md has the command for a larger run against
`medmesh serve`. Rate limiting is off here: the test checks the routes, and schemathesis's
request rate is far above any client budget (tests/integration/test_limits.py covers the limiter).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.store.database import Database
from tests.conftest import World, make_world

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def schema_world(database_url: str) -> World:
    async def prepare() -> World:
        database = Database(database_url)
        try:
            return await make_world(database)
        finally:
            await database.dispose()

    return asyncio.run(prepare())


def _run_operation(operation: Any, world: World) -> None:
    # Readings are written with a device credential: the ingest API and the FHIR writes.
    device = operation.path.startswith("/ingest/") or (
        operation.method.upper() == "POST" and operation.path in ("/fhir", "/fhir/Observation")
    )
    headers = world.device_headers if device else world.reader_headers
    # An event stream never ends by itself: it is cut after half a second, with what it sent;
    # it has one optional parameter, so a few examples cover it.
    stream = operation.path == "/api/v1/events"
    timeout = 0.5 if stream else None

    @given(case=operation.as_strategy())
    @settings(
        max_examples=3 if stream else EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # the same budget each run, no replay of another run's failures
        phases=[Phase.explicit, Phase.generate],  # report the failure as found, unshrunk
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=timeout)

    check()


def test_every_operation_answers_as_its_openapi_document_declares(
    database_url: str, schema_world: World
) -> None:
    app = create_app(
        Settings(database_url=database_url, auto_migrate=False, rate_limit_enabled=False)
    )
    # Loading starts the app's lifespan in schemathesis's own event loop (stopped below).
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    tested = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            tested += 1
            try:
                _run_operation(operation, schema_world)
            except Exception as exc:  # every operation's failure, not just the first
                failures.append(f"{operation.method.upper()} {operation.path}:\n{exc}")
    finally:
        shutdown_lifespans()
    assert tested >= 20, f"only {tested} operations in the OpenAPI document"
    assert not failures, "\n\n".join(failures)
