"""Patient/$everything through the real app on both backends: one patient's record only,
paged with working next links, filtered by type and time, every resource valid FHIR R4."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhirpy import AsyncFHIRClient

from medmesh.store.database import Database
from tests.conftest import make_world
from tests.export_fixtures import (
    A_READINGS,
    ExportApp,
    add_alert,
    export_app,
    ingest,
    make_clinic,
    move_to_organization,
    now,
)
from tests.helpers import BASE_TIME, minute_series, stamp
from tests.live_server import live_server

__all__ = ["export_app"]  # the fixture, used by name

MODELS: dict[str, Any] = {
    "Patient": Patient,
    "Device": Device,
    "Observation": Observation,
    "Flag": Flag,
}


def _validate(resource: dict[str, Any]) -> None:
    MODELS[resource["resourceType"]].model_validate(resource)


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


async def _everything(
    http: httpx.AsyncClient, patient_id: str, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = await http.get(
        f"/fhir/Patient/{patient_id}/$everything", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle: dict[str, Any] = response.json()
    Bundle.model_validate(bundle)
    return bundle


async def _all_pages(
    http: httpx.AsyncClient, patient_id: str, headers: dict[str, str], **params: Any
) -> tuple[list[dict[str, Any]], int]:
    bundle = await _everything(http, patient_id, headers, **params)
    found = [e["resource"] for e in bundle["entry"]]
    pages = 1
    while (url := _next(bundle)) is not None:
        response = await http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        Bundle.model_validate(bundle)
        found += [e["resource"] for e in bundle["entry"]]
        pages += 1
        assert pages < 100
    return found, pages


async def test_everything_returns_the_patients_record_and_nothing_of_another_patient(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    bundle = await _everything(export_app.http, clinic.a.patient_id, clinic.headers, _count="1000")
    found = [e["resource"] for e in bundle["entry"]]
    kinds = [r["resourceType"] for r in found]
    # The Patient first, then their device, their alert, their observations oldest first.
    assert kinds == ["Patient", "Device", "Flag"] + ["Observation"] * A_READINGS
    assert found[0]["id"] == clinic.a.patient_id
    assert found[1]["id"] == clinic.a.device_id
    assert found[1]["patient"]["reference"] == f"Patient/{clinic.a.patient_id}"
    observations = found[3:]
    assert [o["effectiveDateTime"] for o in observations] == [
        stamp(BASE_TIME + timedelta(minutes=i)) for i in range(A_READINGS)
    ]
    for resource in found:
        _validate(resource)
    text = str(bundle)
    assert clinic.b_patient_id not in text and clinic.b_device_id not in text
    assert _next(bundle) is None


async def test_everything_pages_through_the_record_with_next_links(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    everything, _ = await _all_pages(
        export_app.http, clinic.a.patient_id, clinic.headers, _count="1000"
    )
    paged, pages = await _all_pages(
        export_app.http, clinic.a.patient_id, clinic.headers, _count="4"
    )
    assert pages == 9  # 33 resources, 4 a page
    assert [(r["resourceType"], r["id"]) for r in paged] == [
        (r["resourceType"], r["id"]) for r in everything
    ]
    # Cursors carry ids and offsets only, never a time or a value.
    first = await _everything(export_app.http, clinic.a.patient_id, clinic.headers, _count="4")
    url = _next(first)
    assert url is not None and "2026" not in url


async def test_everything_filters_by_type_clinical_time_and_received_time(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, patient, headers = export_app.http, clinic.a.patient_id, clinic.headers

    only = await _everything(http, patient, headers, _type="Observation,Patient")
    kinds = {e["resource"]["resourceType"] for e in only["entry"]}
    assert kinds == {"Patient", "Observation"}

    window = await _everything(
        http,
        patient,
        headers,
        _type="Observation,Flag",
        start="2026-11-24T08:10:00Z",
        end="2026-11-24T08:19:00Z",
    )
    # The alert opened at 08:05 is outside; the end value is a minute, all of which is in.
    assert [e["resource"]["effectiveDateTime"] for e in window["entry"]] == [
        stamp(BASE_TIME + timedelta(minutes=i)) for i in range(10, 20)
    ]

    since = now()
    later = minute_series(3, start=BASE_TIME + timedelta(hours=2), prefix="late")
    await ingest(http, clinic.a.device_headers, later)
    alert_id = await add_alert(database, patient, now())  # the older alert is left out
    recent = await _everything(http, patient, headers, _since=stamp(since))
    by_type: dict[str, list[str]] = {}
    for entry in recent["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"]["id"])
    assert len(by_type["Observation"]) == 3
    assert by_type["Flag"] == [alert_id]
    assert by_type["Patient"] == [patient]  # no change time: always there


async def test_everything_refuses_bad_parameters_and_unknown_patients(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, patient, headers = export_app.http, clinic.a.patient_id, clinic.headers
    cases = [
        ({"_type": "Medication"}, "Medication"),
        ({"_since": "2026-11-24T08:00:00"}, "time zone"),
        ({"start": "yesterday"}, "date"),
        ({"_cursor": "Observation"}, "cursor"),
        ({"_cursor": "Observation:no-such-id"}, "no longer valid"),
        ({"_sort": "flavour"}, "_sort"),  # unknown parameters are ignored; _sort never
    ]
    for params, words in cases:
        response = await http.get(
            f"/fhir/Patient/{patient}/$everything", params=params, headers=headers
        )
        assert response.status_code == 400, params
        outcome = response.json()
        OperationOutcome.model_validate(outcome)
        assert words in outcome["issue"][0]["diagnostics"]
    # Another patient's observation id is no cursor into this patient's record.
    b_first = await _everything(http, clinic.b_patient_id, headers, _type="Observation")
    b_observation = b_first["entry"][0]["resource"]["id"]
    response = await http.get(
        f"/fhir/Patient/{patient}/$everything",
        params={"_cursor": f"Observation:{b_observation}"},
        headers=headers,
    )
    assert response.status_code == 400
    missing = await http.get("/fhir/Patient/nobody/$everything", headers=headers)
    assert missing.status_code == 404
    OperationOutcome.model_validate(missing.json())
    anonymous = await http.get(f"/fhir/Patient/{patient}/$everything")
    assert anonymous.status_code == 401


async def test_a_device_now_with_another_patient_names_no_patient_in_the_first_record(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)

    from medmesh import provisioning

    await provisioning.assign_device(database, clinic.a.device_id, clinic.b_patient_id, now())
    bundle = await _everything(export_app.http, clinic.a.patient_id, clinic.headers, _type="Device")
    (device,) = [e["resource"] for e in bundle["entry"]]
    assert device["id"] == clinic.a.device_id
    assert "patient" not in device
    assert clinic.b_patient_id not in str(bundle)


async def test_fhirpy_reads_a_group_and_runs_everything_on_a_live_server(
    database_url: str, database: Database, tmp_path: Path
) -> None:
    world = await make_world(database)
    other = await make_world(database, identifier="MRN-9")
    await move_to_organization(database, "north", other.patient_id)
    with live_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            await ingest(http, world.device_headers, minute_series(12))
        client = AsyncFHIRClient(f"{server.base_url}/fhir", authorization=f"Bearer {world.token}")

        # The organisation's panel, as far as this clinician may know it: their patient.
        group = await client.reference("Group", "default").to_resource()
        Group.model_validate(group.serialize())
        assert group["type"] == "person" and group["actual"] is True
        assert [m["entity"]["reference"] for m in group["member"]] == [
            f"Patient/{world.patient_id}"
        ]

        bundle = await client.execute(
            f"Patient/{world.patient_id}/$everything",
            method="get",
            params={"_type": "Observation", "_count": "5"},
        )
        Bundle.model_validate(bundle)
        assert len(bundle["entry"]) == 5
        assert _next(bundle) is not None
