"""The FHIR read API through the real app and database, on both backends. Every resource
returned is validated with fhir.resources (R4B models: Observation, Patient, Device and Bundle
are unchanged from R4, which fhir.resources no longer ships)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from medmesh import provisioning
from medmesh.store.database import Database
from tests.conftest import World
from tests.helpers import BASE_TIME, minute_series, reading, stamp

INGEST = "/ingest/v1/readings"


async def _ingest(client: httpx.AsyncClient, world: World, readings: list[dict[str, Any]]) -> None:
    for start in range(0, len(readings), 500):
        response = await client.post(
            INGEST, json={"readings": readings[start : start + 500]}, headers=world.device_headers
        )
        assert response.status_code == 202
        assert not response.json()["rejected"]


async def _search(client: httpx.AsyncClient, world: World, **params: Any) -> dict[str, Any]:
    response = await client.get("/fhir/Observation", params=params, headers=world.reader_headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)
    return bundle


def _values(bundle: dict[str, Any]) -> list[float]:
    return [e["resource"]["valueQuantity"]["value"] for e in bundle["entry"]]


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


async def test_metadata_is_a_capability_statement_for_r4(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert types == {
        "Patient",
        "Device",
        "Observation",
        "Flag",
        "Communication",
        "ImagingStudy",
        "MedicationRequest",
        "Appointment",
        "Encounter",
        "ChargeItem",
        "Schedule",
        "Slot",
        "Subscription",
        "Consent",
        "AuditEvent",
        "Group",
    }
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {o["name"] for o in patient["operation"]} == {"everything", "export"}


_SAMPLE_VALUES = {
    "token": "active",
    "date": "ge2026-01-01",
    "string": "Doe",
    "number": "10",
    "special": "-date",
    "quantity": "ge1",
}


async def test_every_search_parameter_the_capability_statement_lists_is_accepted(
    client: httpx.AsyncClient, world: World
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        for param in resource.get("searchParam", []):
            value = (
                f"Patient/{world.patient_id}"
                if param["type"] == "reference"
                else _SAMPLE_VALUES[param["type"]]
            )
            response = await client.get(
                f"/fhir/{resource['type']}",
                params={param["name"]: value},
                headers=world.reader_headers,
            )
            assert "unsupported search parameter" not in response.text, (resource, param)
            checked += 1
        if "search-type" in {i["code"] for i in resource["interaction"]}:
            strict = {**world.reader_headers, "Prefer": "handling=strict"}
            refused = await client.get(
                f"/fhir/{resource['type']}", params={"_nonsense": "1"}, headers=strict
            )
            assert refused.status_code == 400, resource["type"]
            assert "unsupported search parameter(s): _nonsense" in refused.text
            lenient = await client.get(
                f"/fhir/{resource['type']}", params={"_nonsense": "1"}, headers=world.reader_headers
            )
            assert "_nonsense" not in lenient.text, resource["type"]
    assert checked >= 20


async def test_observations_are_valid_fhir_with_loinc_and_ucum(
    client: httpx.AsyncClient, world: World
) -> None:
    await _ingest(
        client,
        world,
        [
            reading("hr"),
            reading("spo2", "oxygen-saturation", 96, "%"),
            reading("bp", "blood-pressure", {"systolic": 131, "diastolic": 84}, "mmHg"),
            reading("t", "body-temperature", 99.5, "[degF]"),
            reading("cgm", "cgm-glucose", 7.2, "mmol/L"),
            reading("steps", "steps", 5230, "{steps}"),
        ],
    )
    bundle = await _search(client, world, patient=world.patient_id)
    resources = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    assert set(resources) == {"8867-4", "2708-6", "85354-9", "8310-5", "99504-3", "55423-8"}
    for resource in resources.values():
        Observation.model_validate(resource)
        assert resource["subject"]["reference"] == f"Patient/{world.patient_id}"
        assert resource["device"]["reference"] == f"Device/{world.device_id}"
        assert resource["effectiveDateTime"] == stamp(BASE_TIME)
    assert resources["8867-4"]["valueQuantity"] == {
        "value": 72,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert resources["8310-5"]["valueQuantity"]["value"] == 37.5
    assert resources["8310-5"]["valueQuantity"]["code"] == "Cel"
    spo2_codes = [c["code"] for c in resources["2708-6"]["code"]["coding"]]
    assert spo2_codes == ["2708-6", "59408-5"]
    assert "vital-signs" in str(resources["8867-4"]["category"])
    assert "laboratory" in str(resources["99504-3"]["category"])


async def test_blood_pressure_comes_back_as_a_panel_with_two_components(
    client: httpx.AsyncClient, world: World
) -> None:
    await _ingest(
        client,
        world,
        [reading("bp", "blood-pressure", {"diastolic": 84, "systolic": 131}, "mm[Hg]")],
    )
    bundle = await _search(client, world, code="http://loinc.org|85354-9")
    (entry,) = bundle["entry"]
    panel = entry["resource"]
    Observation.model_validate(panel)
    assert "valueQuantity" not in panel
    parts = [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in panel["component"]
    ]
    assert parts == [("8480-6", 131), ("8462-4", 84)]
    assert {c["valueQuantity"]["code"] for c in panel["component"]} == {"mm[Hg]"}
    read = await client.get(f"/fhir/Observation/{panel['id']}", headers=world.reader_headers)
    assert read.json() == panel


async def test_search_by_code_accepts_system_bar_code_and_alternative_codes(
    client: httpx.AsyncClient, world: World
) -> None:
    await _ingest(client, world, [reading("hr"), reading("spo2", "oxygen-saturation", 96, "%")])
    for code, expected in [
        ("http://loinc.org|8867-4", "8867-4"),
        ("8867-4", "8867-4"),
        ("|2708-6", "2708-6"),
        ("http://loinc.org|59408-5", "2708-6"),
    ]:
        bundle = await _search(client, world, patient=world.patient_id, code=code)
        assert [e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"]] == [expected]
    both = await _search(client, world, code="8867-4,2708-6")
    assert len(both["entry"]) == 2


async def test_date_prefixes_select_the_right_readings(
    client: httpx.AsyncClient, world: World
) -> None:
    await _ingest(client, world, minute_series(10))  # 08:00 … 08:09, values 60 … 69
    t = lambda minute: stamp(BASE_TIME + timedelta(minutes=minute))  # noqa: E731 (reads as data)
    cases = {
        f"ge{t(7)}": [67, 68, 69],
        f"gt{t(7)}": [68, 69],
        f"le{t(2)}": [60, 61, 62],
        f"lt{t(2)}": [60, 61],
        t(4): [64],
        "2026-11-24T08:05": [65],  # minute precision, read as UTC
        "2026-11-24": list(range(60, 70)),
        "2026-11-23": [],
    }
    for date, expected in cases.items():
        bundle = await _search(client, world, patient=world.patient_id, date=date)
        assert _values(bundle) == expected, date
    between = await _search(client, world, date=[f"ge{t(3)}", f"lt{t(6)}"])
    assert _values(between) == [63, 64, 65]


async def test_sort_and_paging_walk_every_reading_once(
    client: httpx.AsyncClient, world: World
) -> None:
    await _ingest(client, world, minute_series(25))
    newest = await _search(
        client, world, patient=f"Patient/{world.patient_id}", _sort="-date", _count=3
    )
    assert _values(newest) == [84, 83, 82]
    seen: list[float] = []
    url: str | None = f"/fhir/Observation?patient={world.patient_id}&_count=10"
    pages = 0
    while url:
        response = await client.get(url, headers=world.reader_headers)
        bundle = response.json()
        Bundle.model_validate(bundle)
        seen += _values(bundle)
        url = _next(bundle)
        pages += 1
    assert pages == 3
    assert seen == [60 + i % 40 for i in range(25)]


async def test_patient_and_device_read_and_search(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    headers = world.reader_headers
    patient = (await client.get(f"/fhir/Patient/{world.patient_id}", headers=headers)).json()
    Patient.model_validate(patient)
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}]
    by_identifier = (
        await client.get(
            "/fhir/Patient", params={"identifier": "urn:medmesh:mrn|MRN-1"}, headers=headers
        )
    ).json()
    assert [e["resource"]["id"] for e in by_identifier["entry"]] == [world.patient_id]
    by_name = (await client.get("/fhir/Patient", params={"name": "do"}, headers=headers)).json()
    assert len(by_name["entry"]) == 1
    nobody = (await client.get("/fhir/Patient", params={"name": "zz"}, headers=headers)).json()
    assert nobody["entry"] == []

    device = (await client.get(f"/fhir/Device/{world.device_id}", headers=headers)).json()
    Device.model_validate(device)
    assert device["patient"] == {"reference": f"Patient/{world.patient_id}"}
    assert device["modelNumber"] == "BP-1"
    await provisioning.register_device(database, display_name="Unassigned scale")
    devices = (
        await client.get("/fhir/Device", params={"patient": world.patient_id}, headers=headers)
    ).json()
    assert [e["resource"]["id"] for e in devices["entry"]] == [world.device_id]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/fhir/Patient/does-not-exist", 404, "not-found"),
        ("/fhir/Observation/does-not-exist", 404, "not-found"),
        ("/fhir/Device/does-not-exist", 404, "not-found"),
        ("/fhir/Observation?_include=Observation:performer", 400, "invalid"),
        ("/fhir/Observation?date=2026-13-01", 400, "invalid"),
        ("/fhir/Observation?date=zz2026-11-01", 400, "invalid"),
        ("/fhir/Observation?_sort=value", 400, "invalid"),
        ("/fhir/Observation?_count=many", 400, "invalid"),
        ("/fhir/Observation?code=http://snomed.info/sct|271649006", 400, "invalid"),
        ("/fhir/Procedure", 404, "not-found"),
    ],
)
async def test_errors_are_operation_outcomes(
    client: httpx.AsyncClient, world: World, path: str, status: int, code: str
) -> None:
    response = await client.get(path, headers=world.reader_headers)
    assert response.status_code == status
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["code"] == code


async def test_health_data_needs_a_valid_token(client: httpx.AsyncClient, world: World) -> None:
    for headers in ({}, {"Authorization": "Bearer mmt_wrong"}, world.device_headers):
        for path in (f"/fhir/Patient/{world.patient_id}", "/fhir/Observation", "/fhir/Device"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401
            assert world.patient_id not in response.text
            OperationOutcome.model_validate(response.json())


async def test_responses_forbid_caching(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/fhir/Observation", headers=world.reader_headers)
    assert response.headers["cache-control"] == "no-store"
