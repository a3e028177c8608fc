"""Alerts over HTTP: the JSON API (list, acknowledge, resolve, care plans), FHIR Flag, and the
ALERT events the app's bus carries. Readings go in through the real HTTP ingest endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.flag import Flag

from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.events.bus import EventBus, Subscription
from medmesh.events.model import ALERT, Event
from tests.conftest import World
from tests.helpers import after_commit_settled, reading


@pytest.fixture
async def app_and_http(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app in-process (periodic checks off: tests call them with their own clock)."""
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield app, http


@pytest.fixture
def http(app_and_http: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_and_http[1]


@pytest.fixture
def app(app_and_http: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_and_http[0]


async def post_glucose(
    app: FastAPI, http: httpx.AsyncClient, world: World, value: float, ago: int = 5
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=ago)
    body = {"readings": [reading(f"bg-{ago}-{value}", "blood-glucose", value, "mg/dL", at)]}
    response = await http.post("/ingest/v1/readings", json=body, headers=world.device_headers)
    assert response.status_code == 202, response.text
    await after_commit_settled(app)  # the rules judge it just after the acknowledgement


async def only_alert(http: httpx.AsyncClient, world: World) -> dict[str, Any]:
    response = await http.get(
        "/api/v1/alerts", params={"patient": world.patient_id}, headers=world.reader_headers
    )
    assert response.status_code == 200
    (alert,) = response.json()["alerts"]
    return dict(alert)


async def test_a_clinician_acknowledges_then_resolves_an_alert_with_who_and_when(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    await post_glucose(app, http, world, 48)
    alert = await only_alert(http, world)
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "glucose-low",
        "critical",
        "open",
    )

    before = datetime.now(UTC)
    response = await http.post(
        f"/api/v1/alerts/{alert['id']}/acknowledge", headers=world.reader_headers
    )
    assert response.status_code == 200
    acknowledged = response.json()
    assert acknowledged["status"] == "acknowledged"
    assert acknowledged["acknowledged_by"] == "dr test"
    assert datetime.fromisoformat(acknowledged["acknowledged_at"]) >= before

    response = await http.post(
        f"/api/v1/alerts/{alert['id']}/resolve",
        json={"reason": "hypo treated, patient called"},
        headers=world.reader_headers,
    )
    assert response.status_code == 200
    resolved = response.json()
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "dr test")
    assert resolved["resolution"] == "hypo treated, patient called"
    assert resolved["acknowledged_by"] == "dr test"

    read = await http.get(f"/api/v1/alerts/{alert['id']}", headers=world.reader_headers)
    assert read.json() == resolved


async def test_resolving_twice_or_acknowledging_a_resolved_alert_is_a_conflict(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    await post_glucose(app, http, world, 48)
    alert_id = (await only_alert(http, world))["id"]
    resolve = f"/api/v1/alerts/{alert_id}/resolve"
    body = {"reason": "false reading"}
    assert (await http.post(resolve, json=body, headers=world.reader_headers)).status_code == 200

    again = await http.post(resolve, json=body, headers=world.reader_headers)
    assert again.status_code == 409
    assert again.json()["resourceType"] == "OperationOutcome"
    assert again.json()["issue"][0]["code"] == "conflict"
    acknowledge = await http.post(
        f"/api/v1/alerts/{alert_id}/acknowledge", headers=world.reader_headers
    )
    assert acknowledge.status_code == 409


async def test_alert_api_errors_are_operation_outcomes(
    http: httpx.AsyncClient, world: World
) -> None:
    missing = await http.get("/api/v1/alerts/nope", headers=world.reader_headers)
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    bad_status = await http.get(
        "/api/v1/alerts", params={"status": "closed"}, headers=world.reader_headers
    )
    assert bad_status.status_code == 400
    no_reason = await http.post(
        "/api/v1/alerts/nope/resolve", json={"reason": ""}, headers=world.reader_headers
    )
    assert no_reason.status_code == 400
    assert (await http.get("/api/v1/alerts")).status_code == 401


async def test_alerts_are_listed_newest_first_and_filtered_by_status(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    await post_glucose(app, http, world, 260, ago=10)  # high
    await post_glucose(app, http, world, 60, ago=5)  # low, which also clears the high alert
    everything = await http.get(
        "/api/v1/alerts", params={"patient": world.patient_id}, headers=world.reader_headers
    )
    assert [a["rule"] for a in everything.json()["alerts"]] == ["glucose-low", "glucose-high"]
    active = await http.get(
        "/api/v1/alerts",
        params=[("patient", world.patient_id), ("status", "open,acknowledged")],
        headers=world.reader_headers,
    )
    assert [a["rule"] for a in active.json()["alerts"]] == ["glucose-low"]
    resolved = await http.get(
        "/api/v1/alerts", params={"status": "resolved"}, headers=world.reader_headers
    )
    assert [a["rule"] for a in resolved.json()["alerts"]] == ["glucose-high"]


async def next_alert_event(subscription: Subscription) -> Event:
    while True:
        event = await asyncio.wait_for(subscription.get(), 5)
        if event.kind == ALERT:
            return event


async def test_every_alert_change_is_published_on_the_bus_as_the_api_renders_it(
    app_and_http: tuple[FastAPI, httpx.AsyncClient], world: World
) -> None:
    app, http = app_and_http
    bus: EventBus = app.state.services.bus
    subscription = bus.subscribe()
    await post_glucose(app, http, world, 50)
    opened = await next_alert_event(subscription)
    alert = await only_alert(http, world)
    assert opened.patient_id == world.patient_id
    assert opened.data == alert

    acknowledged = await http.post(
        f"/api/v1/alerts/{alert['id']}/acknowledge", headers=world.reader_headers
    )
    event = await next_alert_event(subscription)
    assert event.data == acknowledged.json()
    await post_glucose(app, http, world, 90, ago=1)  # recovered: resolved automatically
    event = await next_alert_event(subscription)
    assert (event.data["status"], event.data["resolution"]) == ("resolved", "condition cleared")
    subscription.close()


async def test_alerts_are_fhir_flags_that_validate(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    await post_glucose(app, http, world, 50)
    alert = await only_alert(http, world)
    await http.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=world.reader_headers)

    response = await http.get(f"/fhir/Flag/{alert['id']}", headers=world.reader_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    flag = Flag.model_validate(response.json())
    assert flag.status == "active"
    assert flag.subject.reference == f"Patient/{world.patient_id}"
    assert flag.code.coding[0].system == "https://medmesh.dev/fhir/CodeSystem/alert-rule"
    assert flag.code.coding[0].code == "glucose-low"
    extensions = {e.url: e for e in flag.extension}
    severity = extensions["https://medmesh.dev/fhir/StructureDefinition/alert-severity"]
    assert severity.valueCode == "critical"
    acknowledgement = extensions[
        "https://medmesh.dev/fhir/StructureDefinition/alert-acknowledgement"
    ]
    assert {e.url: e.valueString for e in acknowledgement.extension}["by"] == "dr test"
    assert flag.period.end is None

    await http.post(
        f"/api/v1/alerts/{alert['id']}/resolve", json={"reason": "ok"}, headers=world.reader_headers
    )
    inactive = await http.get(
        "/fhir/Flag",
        params={"patient": f"Patient/{world.patient_id}", "status": "inactive"},
        headers=world.reader_headers,
    )
    bundle = Bundle.model_validate(inactive.json())
    assert bundle.entry is not None and len(bundle.entry) == 1
    resolved = Flag.model_validate(inactive.json()["entry"][0]["resource"])
    assert resolved.status == "inactive" and resolved.period.end is not None
    active = await http.get("/fhir/Flag", params={"status": "active"}, headers=world.reader_headers)
    assert active.json()["entry"] == []


async def test_flag_search_refuses_unknown_parameters_and_statuses(
    http: httpx.AsyncClient, world: World
) -> None:
    # A value a known parameter cannot take is refused; an unknown parameter is ignored unless
    # the client asks for strict handling (FHIR's lenient default, docs/fhir-api.md).
    refused = await http.get("/fhir/Flag", params={"status": "open"}, headers=world.reader_headers)
    assert refused.status_code == 400
    lenient = await http.get("/fhir/Flag", params={"code": "x"}, headers=world.reader_headers)
    assert lenient.status_code == 200 and "code=" not in lenient.json()["link"][0]["url"]
    strict = await http.get(
        "/fhir/Flag",
        params={"code": "x"},
        headers={**world.reader_headers, "Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert (await http.get("/fhir/Flag/nope", headers=world.reader_headers)).status_code == 404
    metadata = (await http.get("/fhir/metadata")).json()
    assert "Flag" in [r["type"] for r in metadata["rest"][0]["resource"]]


async def test_a_care_plan_shows_defaults_and_keeps_only_what_differs(
    app: FastAPI, http: httpx.AsyncClient, world: World
) -> None:
    url = f"/api/v1/patients/{world.patient_id}/care-plan"
    default = (await http.get(url, headers=world.reader_headers)).json()
    assert default["thresholds"]["spo2_low"] == 90 and default["overrides"] == {}
    assert default["updated_at"] is None

    body = {
        "thresholds": {"glucose_low": 75, "glucose_low_clear": 85, "spo2_low": 90},
        "schedule": {"per_day": {"blood-pressure": 2}, "timezone": "Europe/London"},
        "primary_clinician": "dr test",
        "escalation_clinician": "dr lead",
    }
    response = await http.put(url, json=body, headers=world.reader_headers)
    assert response.status_code == 200
    plan = response.json()
    assert plan["overrides"] == {"glucose_low": 75, "glucose_low_clear": 85}
    assert plan["thresholds"]["glucose_low"] == 75
    assert plan["schedule"] == {"per_day": {"blood-pressure": 2}, "timezone": "Europe/London"}
    assert (plan["escalation_clinician"], plan["updated_by"]) == ("dr lead", "dr test")
    assert (await http.get(url, headers=world.reader_headers)).json() == plan

    await post_glucose(app, http, world, 72)  # low for this patient, not by default
    assert (await only_alert(http, world))["rule"] == "glucose-low"


@pytest.mark.parametrize(
    "body",
    [
        {"thresholds": {"spo2_lo": 88}},
        {"thresholds": {"spo2_low": 95}},  # above its clear level
        {"schedule": {"per_day": {"blood-presure": 2}}},
        {"schedule": {"timezone": "Mars/Olympus"}},
        {"colour": "red"},
    ],
)
async def test_a_care_plan_that_cannot_work_is_refused(
    http: httpx.AsyncClient, world: World, body: dict[str, Any]
) -> None:
    url = f"/api/v1/patients/{world.patient_id}/care-plan"
    response = await http.put(url, json=body, headers=world.reader_headers)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_the_care_plan_of_an_unknown_patient_is_not_found(
    http: httpx.AsyncClient, world: World
) -> None:
    url = "/api/v1/patients/nobody/care-plan"
    assert (await http.get(url, headers=world.reader_headers)).status_code == 404
    assert (await http.put(url, json={}, headers=world.reader_headers)).status_code == 404
