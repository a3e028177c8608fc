"""Two real third-party FHIR clients, fhirpy and SMART's fhirclient, run the US Core and other
searches against a live server. Every resource they get back validates with fhir.resources
(R4B)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient import server as fhirclient_server
from fhirclient.models.device import Device as ClientDevice
from fhirclient.models.observation import Observation as ClientObservation
from fhirclient.models.patient import Patient as ClientPatient
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.conftest import World
from tests.helpers import BASE_TIME, minute_series, reading
from tests.live_server import LiveServer, live_server


def _valid(resource: dict[str, Any]) -> dict[str, Any]:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


async def _ingest(server: LiveServer, world: World) -> None:
    """60 heart-rate readings a minute apart from 08:00 (60..99), a temperature at 08:30 and a
    blood pressure at 08:45, on the 24th."""
    readings = [
        *minute_series(60),
        reading("t-1", "body-temperature", 37.2, "Cel", BASE_TIME + timedelta(minutes=30)),
        reading(
            "bp-1",
            "blood-pressure",
            {"systolic": 128, "diastolic": 82},
            "mm[Hg]",
            BASE_TIME + timedelta(minutes=45),
        ),
    ]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post(
            "/ingest/v1/readings", json={"readings": readings}, headers=world.device_headers
        )
        assert response.status_code == 202 and not response.json()["rejected"], response.text


async def test_fhirpy_runs_the_us_core_searches_counts_and_includes(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        await _ingest(server, world)
        client = AsyncFHIRClient(f"{server.base_url}/fhir", authorization=f"Bearer {world.token}")
        observations = client.resources("Observation")
        p = world.patient_id

        # US Core Vital Signs: patient+category, patient+code, patient+category+date.
        vitals = observations.search(patient=p, category="vital-signs")
        assert await vitals.count() == 62  # fhirpy adds _totalMethod, which is ignored
        every = await vitals.limit(25).fetch_all()
        assert len(every) == 62 and len({o.id for o in every}) == 62
        for o in every:
            _valid(o.serialize())
        hr = observations.search(patient=p, code="http://loinc.org|8867-4")
        assert await hr.count() == 60
        window = await observations.search(
            patient=p, category="vital-signs", date=["ge2026-11-24T08:10Z", "lt2026-11-24T08:20Z"]
        ).fetch_all()
        assert len(window) == 10
        fast = await hr.search(**{"value-quantity": "ge95"}).fetch_all()
        assert sorted(o.valueQuantity.value for o in fast) == [95, 96, 97, 98, 99]
        newest = await hr.sort("-date").limit(1).fetch()
        assert newest[0].valueQuantity.value == 79  # 08:59: 60 + 59 % 40

        # _include: the Patient and Device once each, beside the matches.
        bundle = await (
            hr.include("Observation", "subject").include("Observation", "device").limit(5)
        ).fetch_raw()
        included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
        assert sorted(r["resourceType"] for r in included) == ["Device", "Patient"]
        for resource in included:
            _valid(resource)

        # US Core Patient: identifier, name, _id, birthdate/gender with name.
        patients = client.resources("Patient")
        found = await patients.search(identifier="urn:medmesh:mrn|MRN-1").fetch_all()
        assert [x.id for x in found] == [p]
        assert await patients.search(name="doe", gender="female").count() == 1
        assert await patients.search(_id=p).count() == 1
        _valid(found[0].serialize())
        assert found[0]["meta"]["profile"] == [
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
        ]
        with_record = await patients.search(_id=p).revinclude("Observation", "patient").fetch_raw()
        assert len(with_record["entry"]) == 1 + 62

        devices = await client.resources("Device").search(patient=p).fetch_all()
        assert [d.id for d in devices] == [world.device_id]
        _valid(devices[0].serialize())

        last = await client.execute("Observation/$lastn", method="get", params={"patient": p})
        assert sorted(e["resource"]["code"]["coding"][0]["code"] for e in last["entry"]) == [
            "8310-5",
            "85354-9",
            "8867-4",
        ]

        with pytest.raises(OperationOutcome):
            await observations.search(patient=p, date="ge2026-99-01").fetch()
        with pytest.raises(OperationOutcome):
            await observations.search(patient=p).sort("colour").fetch()
        with pytest.raises(OperationOutcome):
            await observations.include("Observation", "performer").fetch()


def _fhirclient_searches(base_url: str, world: World) -> dict[str, list[dict[str, Any]]]:
    """fhirclient is synchronous (requests): run in a thread."""
    server = fhirclient_server.FHIRServer(None, base_uri=f"{base_url}/fhir")
    server.session.headers["Authorization"] = f"Bearer {world.token}"
    p = world.patient_id

    def run(search: Any) -> list[dict[str, Any]]:
        return [r.as_json() for r in search.perform_resources_iter(server)]

    return {
        "vitals": run(
            ClientObservation.where({"patient": p, "category": "vital-signs", "_count": "20"})
        ),
        "dated": run(
            ClientObservation.where(
                {"patient": p, "code": "http://loinc.org|8867-4", "date": "ge2026-11-24T08:50Z"}
            )
        ),
        "bp": run(ClientObservation.where({"patient": p, "component-code": "8480-6"})),
        "included": run(
            ClientObservation.where({"patient": p, "code": "8310-5"}).include("subject")
        ),
        "patients": run(ClientPatient.where({"family": "Do", "birthdate": "ne1900"})),
        "revincluded": run(
            ClientPatient.where({"_id": p}).include("patient", ClientDevice, reverse=True)
        ),
    }


async def test_smart_fhirclient_runs_the_new_searches(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        await _ingest(server, world)
        found = await asyncio.to_thread(_fhirclient_searches, server.base_url, world)
    for resources in found.values():
        for resource in resources:
            _valid(resource)
    assert len(found["vitals"]) == 62  # four pages of 20, followed through `next`
    assert [o["valueQuantity"]["value"] for o in found["dated"]] == list(range(70, 80))
    assert [o["component"][0]["valueQuantity"]["value"] for o in found["bp"]] == [128]
    assert sorted(r["resourceType"] for r in found["included"]) == ["Observation", "Patient"]
    assert found["patients"] == []  # Jane Doe has no birth date recorded
    assert sorted(r["resourceType"] for r in found["revincluded"]) == ["Device", "Patient"]
