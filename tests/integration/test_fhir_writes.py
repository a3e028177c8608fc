"""FHIR writes from gateways (POST /fhir/Observation, transaction and batch Bundles) through
the real app, the real ingest pipeline and the real database, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhirpy import AsyncFHIRClient
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetters
from medmesh.store.schema import audit_log, observations
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import BASE_TIME, AppClient, stamp
from tests.live_server import live_server

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"
FHIR_JSON = {"Content-Type": "application/fhir+json"}

# The Personal Health Device IG's identifiers: the patient's MRN system of its examples, and
# the IEEE 11073 system id (EUI-64) that identifies PHDs and gateways.
PHD_MRN_SYSTEM = "urn:oid:2.9991.2.3.4.5.6.7.8.10"
EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
OXIMETER_EUI64 = "74-E8-FF-FE-FF-05-1C-00"
GATEWAY_EUI64 = "EC-DE-3D-4E-58-53-2D-31"


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


async def _count(database: Database, table: Any = observations) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def heart_rate(
    value: float = 72, *, at: Any = BASE_TIME, identifier: str | None = "hr-1", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "effectiveDateTime": stamp(at),
        "valueQuantity": {"value": value, "unit": "beats/minute", "system": UCUM, "code": "/min"},
        **extra,
    }
    if identifier is not None:
        resource["identifier"] = [{"system": "urn:example:app", "value": identifier}]
    return resource


def post_entry(resource: dict[str, Any], **request: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }


# ----------------------------------------------------------------------------------------------
# POST /fhir/Observation


async def test_a_device_creates_an_observation_and_reads_it_back_in_search(
    http: AppClient, world: World, database: Database
) -> None:
    body = heart_rate(subject={"reference": f"Patient/{world.patient_id}"})
    created = await http.post(
        "/fhir/Observation", json=body, headers={**world.device_headers, **FHIR_JSON}
    )
    assert created.status_code == 201, created.text
    stored = Observation.model_validate(created.json())
    assert created.headers["location"].endswith(f"/fhir/Observation/{stored.id}")
    assert stored.subject is not None and stored.subject.reference == f"Patient/{world.patient_id}"
    found = await http.get(
        "/fhir/Observation", params={"patient": world.patient_id}, headers=world.reader_headers
    )
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [stored.id]
    async with database.read() as conn:
        creates = (
            await conn.execute(
                select(audit_log.c.actor_id).where(
                    audit_log.c.action == "C", audit_log.c.resource_type == "Observation"
                )
            )
        ).all()
    assert [r.actor_id for r in creates] == [world.device_id]


async def test_resending_or_if_none_exist_matches_the_stored_observation_with_200(
    http: AppClient, world: World, database: Database
) -> None:
    headers = {**world.device_headers, **FHIR_JSON}
    first = await http.post("/fhir/Observation", json=heart_rate(), headers=headers)
    again = await http.post("/fhir/Observation", json=heart_rate(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["location"] == again.headers["location"]
    conditional = {**headers, "If-None-Exist": "identifier=urn:example:app|hr-2"}
    made = await http.post(
        "/fhir/Observation", json=heart_rate(identifier=None), headers=conditional
    )
    matched = await http.post(
        "/fhir/Observation", json=heart_rate(80, identifier=None), headers=conditional
    )
    assert (made.status_code, matched.status_code) == (201, 200)
    assert matched.json()["valueQuantity"]["value"] == 72  # the stored one, not the resend
    assert await _count(database) == 2


async def test_bad_observations_get_an_operation_outcome_and_a_dead_letter(
    http: AppClient, world: World, database: Database
) -> None:
    headers = {**world.device_headers, **FHIR_JSON}
    not_json = await http.post("/fhir/Observation", content=b"{oops", headers=headers)
    assert not_json.status_code == 400
    assert not_json.json()["resourceType"] == "OperationOutcome"
    assert "not valid JSON" in not_json.json()["issue"][0]["diagnostics"]

    by_code = {**headers, "If-None-Exist": "code=8867-4"}
    unsupported = await http.post("/fhir/Observation", json=heart_rate(), headers=by_code)
    assert unsupported.status_code == 400
    assert "identifier=system|value" in unsupported.json()["issue"][0]["diagnostics"]

    invalid = heart_rate()
    del invalid["status"]
    refused = await http.post("/fhir/Observation", json=invalid, headers=headers)
    assert refused.status_code == 400
    assert "Observation.status" in refused.json()["issue"][0]["diagnostics"]

    implausible = await http.post("/fhir/Observation", json=heart_rate(720), headers=headers)
    assert implausible.status_code == 400
    detail = implausible.json()["issue"][0]["diagnostics"]
    assert "implausible-value" in detail and "720" not in detail

    other = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-2"
    )
    theirs = heart_rate(identifier="x", subject={"reference": f"Patient/{other.id}"})
    foreign = await http.post("/fhir/Observation", json=theirs, headers=headers)
    assert foreign.status_code == 400
    assert "no-patient-assigned" in foreign.json()["issue"][0]["diagnostics"]
    by_identifier = heart_rate(
        identifier="y", subject={"reference": "Patient?identifier=urn:medmesh:mrn|MRN-2"}
    )
    refused_too = await http.post("/fhir/Observation", json=by_identifier, headers=headers)
    assert refused_too.status_code == 400

    assert await _count(database) == 0
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(world.device_id)
    assert sorted(d.reason for d in letters) == [
        "implausible-value",
        "malformed",
        "no-patient-assigned",
        "no-patient-assigned",
    ]
    assert all(d.channel == "fhir" for d in letters)


async def test_writes_need_a_device_credential_not_a_user_or_system_token(
    http: AppClient, world: World, database: Database
) -> None:
    service = await provisioning.issue_service_token(
        database, name="integration engine", scopes="system/Observation.cruds"
    )
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [post_entry(heart_rate())]}
    for headers in ({}, world.reader_headers, {"Authorization": f"Bearer {service}"}):
        single = await http.post("/fhir/Observation", json=heart_rate(), headers=headers)
        batch = await http.post("/fhir", json=bundle, headers=headers)
        for answer in (single, batch):
            assert answer.status_code == 401
            assert answer.json()["resourceType"] == "OperationOutcome"
    assert await _count(database) == 0


# ----------------------------------------------------------------------------------------------
# The PHD transaction Bundle


def phd_bundle() -> dict[str, Any]:
    """A first-time upload of a Personal Health Gateway, in the shape of the HL7 Personal
    Health Device IG's examples "Example of a first time Bundle upload" (Bundle-bundle-example-1,
    https://hl7.org/fhir/uv/phd/STU2/Bundle-bundle-example-1.html: Patient and Device entries as
    conditional creates with If-None-Exist on their identifiers, Observations referring to them
    by fullUrl) and "Example Bundled upload" (Bundle-bundle-continuousnonin,
    https://hl7.org/fhir/uv/phd/STU2/Bundle-bundle-continuousnonin.html: a Nonin 3230 pulse
    oximeter's SpO2 coded MDC 150456 with LOINC 59408-5, pulse rate MDC 149530). The narrative
    and meta.profile are shortened; the SpO2 series is a desaturation of seven minutes."""
    patient_url = "urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2"
    phg_url = "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294"
    phd_url = "urn:uuid:95a7d7be-7fc3-4b3b-9a6f-9f5d3c6e7e2a"
    phd_category = {
        "coding": [
            {
                "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
                "code": "phd-observation",
            }
        ]
    }
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "meta": {"profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdPatient"]},
                "identifier": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                    "code": "MR",
                                }
                            ]
                        },
                        "system": PHD_MRN_SYSTEM,
                        "value": "sisansarahId",
                    }
                ],
                "name": [{"family": "Gyannea", "given": ["Sisansarah"]}],
            },
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={PHD_MRN_SYSTEM}|sisansarahId",
            },
        }
    ]
    for url, eui64, kind, extra in (
        (phg_url, GATEWAY_EUI64, "531981", {}),  # MDC_MOC_VMS_MDS_AHD, the gateway
        (
            phd_url,
            OXIMETER_EUI64,
            "65573",  # MDC_MOC_VMS_MDS_SIMP, the sensor
            {
                "manufacturer": "Nonin_Medical_Inc.",
                "serialNumber": "501900083",
                "modelNumber": "Model 3230",
            },
        ),
    ):
        entries.append(
            {
                "fullUrl": url,
                "resource": {
                    "resourceType": "Device",
                    "identifier": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "urn:iso:std:iso:11073:10101",
                                        "code": "531969",
                                        "display": "MDC_ID_MODEL_NUMBER",
                                    }
                                ]
                            },
                            "system": EUI64_SYSTEM,
                            "value": eui64,
                        }
                    ],
                    "type": {"coding": [{"system": MDC, "code": kind}]},
                    **extra,
                },
                "request": {
                    "method": "POST",
                    "url": "Device",
                    "ifNoneExist": f"identifier={EUI64_SYSTEM}|{eui64}",
                },
            }
        )
    for minute in range(8):
        at = BASE_TIME + timedelta(minutes=minute)
        ident = f"{OXIMETER_EUI64}-150456-{minute}"
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{minute}",
                "resource": {
                    "resourceType": "Observation",
                    "meta": {
                        "profile": [
                            "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"
                        ]
                    },
                    "identifier": [{"value": ident}],
                    "status": "final",
                    "category": [phd_category],
                    "code": {
                        "coding": [
                            {"system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"},
                            {"system": LOINC, "code": "59408-5"},
                        ]
                    },
                    "subject": {"reference": patient_url},
                    "effectiveDateTime": stamp(at),
                    "valueQuantity": {"value": 86, "unit": "%", "system": UCUM, "code": "%"},
                    "device": {"reference": phd_url},
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/GatewayDevice",
                            "valueReference": {"reference": phg_url},
                        }
                    ],
                },
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={ident}",
                },
            }
        )
    entries.append(
        post_entry(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [phd_category],
                "code": {
                    "coding": [
                        {"system": MDC, "code": "149530", "display": "MDC_PULS_OXIM_PULS_RATE"},
                        {"system": LOINC, "code": "8889-8"},
                    ]
                },
                "subject": {"reference": patient_url},
                "effectiveDateTime": stamp(BASE_TIME),
                "valueQuantity": {"value": 96, "unit": "bpm", "system": UCUM, "code": "/min"},
                "device": {"reference": phd_url},
            }
        )
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture
async def phd_world(database: Database) -> World:
    """The clinic registered the patient, the oximeter (assigned to her) and the gateway."""
    patient = await provisioning.create_patient(
        database,
        family="Gyannea",
        given="Sisansarah",
        identifier="sisansarahId",
        identifier_system=PHD_MRN_SYSTEM,
    )
    oximeter = await provisioning.register_device(
        database, display_name="Nonin 3230", model="3230", serial_number=OXIMETER_EUI64
    )
    await provisioning.register_device(
        database, display_name="Home hub", serial_number=GATEWAY_EUI64
    )
    await provisioning.assign_device(database, oximeter.device_id, patient.id, ASSIGNED_SINCE)
    clinician = await provisioning.create_user(
        database,
        username="dr-phd",
        display_name="dr phd",
        role=Role.CLINICIAN,
        password="correct horse battery staple",
    )
    await provisioning.add_to_care_team(database, patient.id, clinician.id, added_by="test")
    token = await provisioning.issue_user_token(
        database, user_id=clinician.id, scopes="user/*.cruds"
    )
    return World(patient.id, oximeter.device_id, oximeter.secret, token, clinician.id)


async def test_the_phd_transaction_bundle_is_stored_searchable_and_alerts(
    http: AppClient, phd_world: World, database: Database
) -> None:
    bundle = phd_bundle()
    Bundle.model_validate(bundle)  # the example itself is valid R4B
    answer = await http.post(
        "/fhir", json=bundle, headers={**phd_world.device_headers, **FHIR_JSON}
    )
    assert answer.status_code == 200, answer.text
    response = Bundle.model_validate(answer.json())
    assert response.type == "transaction-response"
    statuses = [e.response.status for e in response.entry or [] if e.response is not None]
    assert statuses == ["200 OK"] * 3 + ["201 Created"] * 9
    locations = [e.response.location for e in response.entry or [] if e.response is not None]
    assert locations[0] == f"Patient/{phd_world.patient_id}"
    assert locations[2] == f"Device/{phd_world.device_id}"

    found = await http.get(
        "/fhir/Observation",
        params={"patient": phd_world.patient_id, "_count": "50"},
        headers=phd_world.reader_headers,
    )
    entries = found.json()["entry"]
    codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in entries)
    assert codes == ["2708-6"] * 8 + ["8867-4"]
    assert {f"Observation/{e['resource']['id']}" for e in entries} == set(locations[3:])

    await http.settled()
    alerts = await http.get(
        "/api/v1/alerts", params={"patient": phd_world.patient_id}, headers=phd_world.reader_headers
    )
    assert [a["rule"] for a in alerts.json()["alerts"]] == ["spo2-low"]

    # The gateway resends the whole upload (no answer reached it): nothing is stored twice.
    again = await http.post("/fhir", json=bundle, headers={**phd_world.device_headers, **FHIR_JSON})
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * 12
    assert await _count(database) == 9


async def test_a_transaction_with_one_bad_entry_stores_nothing(
    http: AppClient, phd_world: World, database: Database
) -> None:
    bundle = phd_bundle()
    bundle["entry"][5]["resource"]["valueQuantity"]["value"] = 3  # SpO2 3 %: a device fault
    answer = await http.post(
        "/fhir", json=bundle, headers={**phd_world.device_headers, **FHIR_JSON}
    )
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["expression"] == ["Bundle.entry[5]"]
    assert "implausible-value" in issue["diagnostics"]
    assert await _count(database) == 0
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(phd_world.device_id)
    assert [d.reason for d in letters] == ["implausible-value"]


async def test_a_batch_stores_the_good_entries_and_answers_each(
    http: AppClient, world: World, database: Database
) -> None:
    other = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-2"
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            post_entry(heart_rate(identifier="a")),
            post_entry(heart_rate(720, identifier="b")),
            post_entry(heart_rate(identifier="c", subject={"reference": f"Patient/{other.id}"})),
            {"request": {"method": "DELETE", "url": "Observation/x"}},
            post_entry({"resourceType": "Observation", "code": {"text": "no status"}}),
            post_entry(heart_rate(75, identifier="d", at=BASE_TIME + timedelta(minutes=1))),
            post_entry(
                {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:medmesh:mrn", "value": "MRN-2"}],
                },
                ifNoneExist="identifier=urn:medmesh:mrn|MRN-2",
            ),
        ],
    }
    answer = await http.post("/fhir", json=bundle, headers={**world.device_headers, **FHIR_JSON})
    assert answer.status_code == 200, answer.text
    response = Bundle.model_validate(answer.json())
    assert response.type == "batch-response"
    statuses = [e.response.status[:3] for e in response.entry or [] if e.response is not None]
    assert statuses == ["201", "400", "400", "400", "400", "201", "400"]
    for entry in answer.json()["entry"]:
        if entry["response"]["status"].startswith("400"):
            assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert await _count(database) == 2


async def test_bundles_that_are_not_transactions_or_batches_are_refused(
    http: AppClient, world: World
) -> None:
    headers = {**world.device_headers, **FHIR_JSON}
    for body in (
        b"[not json",
        b'{"resourceType": "Bundle", "type": "collection", "entry": []}',
        b'{"resourceType": "Patient"}',
    ):
        answer = await http.post("/fhir", content=body, headers=headers)
        assert answer.status_code == 400
        assert answer.json()["resourceType"] == "OperationOutcome"


# ----------------------------------------------------------------------------------------------
# A real client


async def test_fhirpy_saves_an_observation_against_a_live_server(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        client = AsyncFHIRClient(
            f"{server.base_url}/fhir", authorization=f"Bearer {world.device_secret}"
        )
        observation = client.resource("Observation", **heart_rate(68, identifier="fhirpy-1"))
        await observation.save()
        assert observation.id
        reader = AsyncFHIRClient(f"{server.base_url}/fhir", authorization=f"Bearer {world.token}")
        found = await reader.resources("Observation").search(patient=world.patient_id).fetch_all()
        assert [(o.id, o.valueQuantity.value) for o in found] == [(observation.id, 68)]
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            again = await http.post(
                "/fhir/Observation",
                json=heart_rate(68, identifier="fhirpy-1"),
                headers=world.device_headers,
            )
        assert again.status_code == 200


async def test_the_capability_statement_offers_create_transaction_and_batch(
    http: AppClient,
) -> None:
    rest = (await http.get("/fhir/metadata")).json()["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    (observation,) = [r for r in rest["resource"] if r["type"] == "Observation"]
    assert {"code": "create"} in observation["interaction"]


def _fhirclient_writes(base_url: str, world: World) -> tuple[str, list[float]]:
    """SMART's fhirclient (synchronous, requests): the device creates an Observation, then a
    clinician's token reads it back by search."""
    from fhirclient import server as fhirclient_server
    from fhirclient.models.observation import Observation as ClientObservation

    device = fhirclient_server.FHIRServer(None, base_uri=f"{base_url}/fhir")
    device.session.headers["Authorization"] = f"Bearer {world.device_secret}"
    created = ClientObservation(heart_rate(71, identifier="fhirclient-1")).create(device)
    assert created is not None and created["resourceType"] == "Observation"
    reader = fhirclient_server.FHIRServer(None, base_uri=f"{base_url}/fhir")
    reader.session.headers["Authorization"] = f"Bearer {world.token}"
    found = ClientObservation.where({"patient": world.patient_id}).perform_resources_iter(reader)
    return str(created["id"]), [o.valueQuantity.value for o in found]


async def test_smart_fhirclient_creates_an_observation_against_a_live_server(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        created_id, values = await asyncio.to_thread(_fhirclient_writes, server.base_url, world)
    assert created_id and values == [71]
