"""Open mHealth and mapping-template payloads over HTTP, through the real app and database on
both backends, read back through the FHIR API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.ingest.templates import InvalidTemplate
from tests.conftest import World

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "templates"
OMH = "/ingest/v1/readings/omh"
ACME = "/ingest/v1/readings/template/acme-oximeter"
VITALBAND = "/ingest/v1/readings/template/vitalband"
AT = "2026-11-25T08:00:00Z"
MILLIS = 1_795_593_600_000  # AT in epoch milliseconds


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, in-process, with the shipped templates loaded."""
    settings = Settings(database_url=database_url, auto_migrate=False, templates_dir=TEMPLATES)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http


def data_point(uid: str, name: str, body: dict[str, Any], at: str = AT) -> dict[str, Any]:
    return {
        "header": {
            "uuid": uid,
            "schema_id": {"namespace": "omh", "name": name, "version": "2.0"},
            "source_creation_date_time": at,
        },
        "body": body | {"effective_time_frame": {"date_time": at}},
    }


def uv(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit}


async def observations(client: httpx.AsyncClient, world: World) -> dict[str, dict[str, Any]]:
    """The patient's observations by LOINC code."""
    response = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "_count": 100},
        headers=world.reader_headers,
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    Bundle.model_validate(bundle)
    found = [e["resource"] for e in bundle.get("entry", [])]
    return {o["code"]["coding"][0]["code"]: o for o in found}


def quantity(observation: dict[str, Any]) -> tuple[float, str]:
    q = observation["valueQuantity"]
    return round(q["value"], 1), q["code"]


OMH_BATCH = [
    data_point("hr-1", "heart-rate", {"heart_rate": uv(72, "beats/min")}),
    data_point(
        "bp-1",
        "blood-pressure",
        {"systolic_blood_pressure": uv(128, "mmHg"), "diastolic_blood_pressure": uv(82, "mmHg")},
    ),
    data_point("t-1", "body-temperature", {"body_temperature": uv(98.6, "F")}),
    data_point("g-1", "blood-glucose", {"blood_glucose": uv(5.5, "mmol/L")}),
    data_point("w-1", "body-weight", {"body_weight": uv(154, "lb")}),
    data_point("o-1", "oxygen-saturation", {"oxygen_saturation": uv(97, "%")}),
]


async def test_omh_batch_is_stored_in_loinc_and_canonical_units(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(OMH, json=OMH_BATCH, headers=world.device_headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 6, "duplicates": 0, "rejected": []}
    stored = await observations(client, world)
    assert sorted(stored) == ["2708-6", "29463-7", "41653-7", "8310-5", "85354-9", "8867-4"]
    assert quantity(stored["8867-4"]) == (72, "/min")
    assert quantity(stored["8310-5"]) == (37.0, "Cel")
    assert quantity(stored["41653-7"]) == (99.1, "mg/dL")
    assert quantity(stored["29463-7"]) == (69.9, "kg")
    assert quantity(stored["2708-6"]) == (97, "%")
    parts = {
        c["code"]["coding"][0]["code"]: (c["valueQuantity"]["value"], c["valueQuantity"]["code"])
        for c in stored["85354-9"]["component"]
    }
    assert parts == {"8480-6": (128, "mm[Hg]"), "8462-4": (82, "mm[Hg]")}
    assert {o["effectiveDateTime"] for o in stored.values()} == {AT}
    assert {o["subject"]["reference"] for o in stored.values()} == {f"Patient/{world.patient_id}"}


async def test_omh_single_data_point_resent_is_stored_once(
    client: httpx.AsyncClient, world: World
) -> None:
    point = data_point("hr-9", "heart-rate", {"heart_rate": uv(64, "beats/min")})
    first = await client.post(OMH, json=point, headers=world.device_headers)
    again = await client.post(OMH, json=[point], headers=world.device_headers)
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert len(await observations(client, world)) == 1


async def test_omh_bad_points_are_rejected_with_reasons_and_good_ones_stored(
    client: httpx.AsyncClient, world: World
) -> None:
    no_time = data_point("no-time", "heart-rate", {"heart_rate": uv(70, "beats/min")})
    del no_time["body"]["effective_time_frame"]
    batch = [
        data_point("ok", "heart-rate", {"heart_rate": uv(70, "beats/min")}),
        data_point("sleep", "sleep-duration", {"sleep_duration": uv(7, "h")}),
        no_time,
        data_point("hot", "body-temperature", {"body_temperature": uv(60, "C")}),
        data_point("stone", "body-weight", {"body_weight": uv(11, "stone")}),
    ]
    response = await client.post(OMH, json=batch, headers=world.device_headers)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert {(r["index"], r["id"], r["reason"]) for r in body["rejected"]} == {
        (1, "sleep", "unknown-code"),
        (2, "no-time", "malformed"),
        (3, "hot", "implausible-value"),
        (4, "stone", "unit-not-convertible"),
    }
    detail = {r["id"]: r["detail"] for r in body["rejected"]}
    assert "body.effective_time_frame" in detail["no-time"]
    assert "60" not in detail["hot"]
    assert list(await observations(client, world)) == ["8867-4"]


async def test_omh_body_that_is_not_data_points_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(OMH, content=b'"heart-rate"', headers=world.device_headers)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def acme_body(device_id: str) -> dict[str, Any]:
    return {
        "device": {"id": device_id, "model": "AO-200"},
        "measurements": [
            {"seq": 1001, "ts": AT, "spo2": 97, "pr": 72},
            {"seq": 1002, "ts": "2026-11-25T09:05:00+01:00", "spo2": 96},
        ],
    }


async def test_acme_oximeter_payload_is_stored_and_deduplicated(
    client: httpx.AsyncClient, world: World
) -> None:
    body = acme_body(world.device_id)
    first = await client.post(ACME, json=body, headers=world.device_headers)
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    again = await client.post(ACME, json=body, headers=world.device_headers)
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    response = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "code": "2708-6", "_sort": "date"},
        headers=world.reader_headers,
    )
    oximetry = [e["resource"] for e in response.json()["entry"]]
    assert [(o["effectiveDateTime"], quantity(o)) for o in oximetry] == [
        (AT, (97, "%")),
        ("2026-11-25T08:05:00Z", (96, "%")),
    ]
    stored = await observations(client, world)
    assert quantity(stored["8867-4"]) == (72, "/min")


async def test_acme_bad_items_are_rejected_and_good_ones_stored(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {
        "measurements": [
            {"seq": 1, "ts": AT, "spo2": 97},
            {"seq": 2, "ts": AT, "spo2": 30},
            {"seq": 3, "ts": "yesterday", "spo2": 97},
            {"seq": 4, "ts": AT},
        ]
    }
    response = await client.post(ACME, json=body, headers=world.device_headers)
    assert response.status_code == 202
    result = response.json()
    assert result["accepted"] == 1
    assert {(r["index"], r["id"], r["reason"]) for r in result["rejected"]} == {
        (1, "2-spo2", "implausible-value"),
        (2, "3", "malformed"),
        (3, "4", "malformed"),
    }


async def test_acme_payload_naming_another_device_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        ACME, json=acme_body("another-device"), headers=world.device_headers
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"
    assert await observations(client, world) == {}


async def test_vitalband_epoch_millis_samples_are_stored(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {
        "band": "VB-3",
        "samples": [
            {"id": "s1", "kind": "hr", "t": MILLIS, "v": 68},
            {"id": "s2", "kind": "bp", "t": MILLIS, "sys": 121, "dia": 79, "u": "mmHg"},
            {"id": "s3", "kind": "temp", "t": MILLIS, "v": 97.9, "u": "F"},
        ],
    }
    response = await client.post(VITALBAND, json=body, headers=world.device_headers)
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    stored = await observations(client, world)
    assert {o["effectiveDateTime"] for o in stored.values()} == {AT}
    assert quantity(stored["8310-5"]) == (36.6, "Cel")
    assert len(stored["85354-9"]["component"]) == 2


async def test_unknown_template_is_an_unknown_format(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/ingest/v1/readings/template/nobody", json={}, headers=world.device_headers
    )
    assert response.status_code == 400
    assert "format" in response.json()["issue"][0]["diagnostics"]


async def test_app_with_a_bad_template_does_not_start(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"name": "broken"}')
    with pytest.raises(InvalidTemplate, match="messageId"):
        create_app(Settings(database_url=database_url, auto_migrate=False, templates_dir=tmp_path))
