"""Medications and refill requests through the real app on both backends: the care team keeps
the list, the patient asks for a refill, the care team approves (a renewed MedicationRequest),
denies with a reason or asks for a visit; duplicates and stopped medications are refused, even
for two requests at the same moment; MedicationRequest is valid FHIR, in $everything, and is
erased with the patient."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhirpy import AsyncFHIRClient
from sqlalchemy import func, select

from medmesh.access.erasure import erase_patient
from medmesh.domain.errors import Conflict
from medmesh.domain.medications import RefillRequest, RefillStatus
from medmesh.events.model import REFILL
from medmesh.store.database import Database
from medmesh.store.medications import RefillRequests
from medmesh.store.schema import medications, refill_requests
from tests.care_fixtures import CareCast, care, care_http, make_cast
from tests.helpers import AppClient
from tests.live_server import live_server

__all__ = ["care", "care_http"]  # fixtures, used by name

LISINOPRIL = {
    "name": "Lisinopril 10 mg tablet",
    "rxnorm": "314076",
    "dosage": "1 tablet by mouth once a day",
    "refills": 2,
}


async def _prescribe(http: httpx.AsyncClient, cast: CareCast, **changes: Any) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/patients/{cast.world.patient_id}/medications",
        json={**LISINOPRIL, **changes},
        headers=cast.clinician,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ask(
    http: httpx.AsyncClient, cast: CareCast, medication_id: str, note: str | None = None
) -> httpx.Response:
    return await http.post(
        f"/api/v1/medications/{medication_id}/refill-requests",
        json={} if note is None else {"note": note},
        headers=cast.patient,
    )


async def _counts(database: Database) -> tuple[int, int]:
    async with database.read() as conn:
        return (
            int((await conn.execute(select(func.count()).select_from(medications))).scalar_one()),
            int(
                (await conn.execute(select(func.count()).select_from(refill_requests))).scalar_one()
            ),
        )


async def test_a_patient_asks_for_a_refill_and_the_care_team_renews_it(
    care_http: AppClient, care: CareCast
) -> None:
    http = care_http
    medication = await _prescribe(http, care)
    assert medication["status"] == "active" and medication["requester"]["name"] == "dr test"
    events = http.app.state.services.bus.subscribe()
    asked = await _ask(http, care, medication["id"], "Running out on Friday")
    assert asked.status_code == 201, asked.text
    refill = asked.json()
    assert (refill["status"], refill["note"], refill["overdue"]) == (
        "open",
        "Running out on Friday",
        False,
    )
    event = await asyncio.wait_for(events.get(), 5)
    assert event.kind == REFILL and event.data["status"] == "open"
    assert "Friday" not in event.to_json().decode()
    events.close()

    duplicate = await _ask(http, care, medication["id"])
    assert duplicate.status_code == 409
    assert "already requested" in duplicate.json()["issue"][0]["diagnostics"]

    queue = await http.get(
        "/api/v1/refill-requests", params={"status": "open"}, headers=care.clinician
    )
    assert [r["id"] for r in queue.json()["refill_requests"]] == [refill["id"]]
    approved = await http.post(
        f"/api/v1/refill-requests/{refill['id']}/approve",
        json={"refills": 3},
        headers=care.clinician,
    )
    assert approved.status_code == 200, approved.text
    renewal = approved.json()["renewal"]
    assert renewal["renews"] == medication["id"]
    assert (renewal["refills"], renewal["status"], renewal["dosage"]) == (
        3,
        "active",
        LISINOPRIL["dosage"],
    )
    again = await http.post(
        f"/api/v1/refill-requests/{refill['id']}/approve",
        json={"refills": 3},
        headers=care.clinician,
    )
    assert again.status_code == 409
    assert "already answered" in again.json()["issue"][0]["diagnostics"]

    mine = await http.get(
        f"/api/v1/patients/{care.world.patient_id}/medications",
        params={"status": "active"},
        headers=care.patient,
    )
    assert [m["id"] for m in mine.json()["medications"]] == [renewal["id"]]
    answered = await http.get("/api/v1/refill-requests", headers=care.patient)
    (seen,) = answered.json()["refill_requests"]
    assert (seen["status"], seen["decided_by"], seen["renewal_id"]) == (
        "approved",
        "dr test",
        renewal["id"],
    )
    fhir = await http.get(f"/fhir/MedicationRequest/{renewal['id']}", headers=care.patient)
    resource = fhir.json()
    MedicationRequest.model_validate(resource)
    assert resource["priorPrescription"] == {"reference": f"MedicationRequest/{medication['id']}"}
    assert resource["requester"]["reference"] == f"Practitioner/{care.world.clinician_id}"
    assert resource["dispenseRequest"]["numberOfRepeatsAllowed"] == 3


async def test_deny_with_a_reason_the_patient_reads_or_ask_for_a_visit(
    care_http: AppClient, care: CareCast
) -> None:
    http = care_http
    first = await _prescribe(http, care)
    second = await _prescribe(http, care, name="Metformin 500 mg tablet", rxnorm=None)
    refill = (await _ask(http, care, first["id"])).json()
    no_reason = await http.post(
        f"/api/v1/refill-requests/{refill['id']}/deny", json={}, headers=care.clinician
    )
    assert no_reason.status_code == 400
    assert "reason is required" in no_reason.json()["issue"][0]["diagnostics"]
    denied = await http.post(
        f"/api/v1/refill-requests/{refill['id']}/deny",
        json={"reason": "Your blood pressure is low now; we stop this one."},
        headers=care.clinician,
    )
    assert denied.json()["status"] == "denied"
    other = (await _ask(http, care, second["id"])).json()
    visit = await http.post(
        f"/api/v1/refill-requests/{other['id']}/visit", json={}, headers=care.clinician
    )
    assert visit.json()["status"] == "visit-requested"
    seen = (await http.get("/api/v1/refill-requests", headers=care.patient)).json()
    reasons = {r["medication_id"]: (r["status"], r["reason"]) for r in seen["refill_requests"]}
    assert reasons == {
        first["id"]: ("denied", "Your blood pressure is low now; we stop this one."),
        second["id"]: ("visit-requested", None),
    }
    # Once answered, the patient may ask again.
    assert (await _ask(http, care, first["id"])).status_code == 201


async def test_bad_input_and_stopped_medications_are_refused_and_change_nothing(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    http, patient_id = care_http, care.world.patient_id
    medication = await _prescribe(http, care)
    stopped = await http.post(
        f"/api/v1/medications/{medication['id']}/stop", headers=care.clinician
    )
    assert stopped.json()["status"] == "stopped"
    before = await _counts(database)
    refused = await _ask(http, care, medication["id"])
    assert refused.status_code == 409
    assert "no longer active" in refused.json()["issue"][0]["diagnostics"]
    for changes, words in (
        ({"name": "  "}, "name is required"),
        ({"dosage": ""}, "dosage is required"),
        ({"rxnorm": "abc"}, "RxNorm"),
        ({"refills": 13}, "refills"),
        ({"colour": "blue"}, "colour"),
    ):
        answer = await http.post(
            f"/api/v1/patients/{patient_id}/medications",
            json={**LISINOPRIL, **changes},
            headers=care.clinician,
        )
        assert answer.status_code == 400, (changes, answer.text)
        assert words in answer.json()["issue"][0]["diagnostics"], answer.text
    # The patient does not write their own list; nobody else's clinician or patient acts on it.
    own = await http.post(
        f"/api/v1/patients/{patient_id}/medications", json=LISINOPRIL, headers=care.patient
    )
    assert own.status_code == 403
    for headers in (care.other_patient, care.other.reader_headers):
        assert (
            await http.post(
                f"/api/v1/medications/{medication['id']}/refill-requests", json={}, headers=headers
            )
        ).status_code == 404
        assert (
            await http.post(f"/api/v1/medications/{medication['id']}/stop", headers=headers)
        ).status_code == 404
        listed = await http.get(f"/api/v1/patients/{patient_id}/medications", headers=headers)
        assert listed.status_code == 403
    # A clinician does not ask for refills on the patient's behalf.
    active = await _prescribe(http, care)
    on_behalf = await http.post(
        f"/api/v1/medications/{active['id']}/refill-requests", json={}, headers=care.clinician
    )
    assert on_behalf.status_code == 404
    assert await _counts(database) == (before[0] + 1, before[1])


async def test_two_refill_requests_at_the_same_moment_make_one(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    medication = await _prescribe(care_http, care)
    answers = await asyncio.gather(*(_ask(care_http, care, medication["id"]) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    # And the database itself refuses a second open request, whoever writes it.
    with pytest.raises(Conflict, match="already requested"):
        async with database.write() as conn:
            await RefillRequests(conn).add(
                RefillRequest(
                    id=str(uuid.uuid4()),
                    patient_id=care.world.patient_id,
                    medication_id=medication["id"],
                    status=RefillStatus.OPEN,
                    note=None,
                    requested_at=datetime.now(UTC),
                    requested_by="test",
                )
            )
    assert (await _counts(database))[1] == 1


async def test_the_queue_is_oldest_first_and_highlights_overdue_requests(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    old = await _prescribe(care_http, care)
    new = await _prescribe(care_http, care, name="Metformin 500 mg tablet")
    await _ask(care_http, care, new["id"])
    async with database.write() as conn:
        await RefillRequests(conn).add(
            RefillRequest(
                id=str(uuid.uuid4()),
                patient_id=care.world.patient_id,
                medication_id=old["id"],
                status=RefillStatus.OPEN,
                note=None,
                requested_at=datetime.now(UTC) - timedelta(days=3),
                requested_by="test",
            )
        )
    queue = (await care_http.get("/api/v1/refill-requests", headers=care.clinician)).json()
    assert [(r["medication_id"], r["overdue"]) for r in queue["refill_requests"]] == [
        (old["id"], True),
        (new["id"], False),
    ]
    other = await care_http.get("/api/v1/refill-requests", headers=care.other.reader_headers)
    assert other.json()["refill_requests"] == []


async def test_medication_requests_are_fhir_in_everything_and_erased(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    http, patient_id = care_http, care.world.patient_id
    first = await _prescribe(http, care)
    await _prescribe(http, care, name="Metformin 500 mg tablet", rxnorm=None)
    await http.post(f"/api/v1/medications/{first['id']}/stop", headers=care.clinician)
    found = await http.get(
        "/fhir/MedicationRequest", params={"patient": patient_id}, headers=care.clinician
    )
    Bundle.model_validate(found.json())
    for entry in found.json()["entry"]:
        MedicationRequest.model_validate(entry["resource"])
    active = await http.get(
        "/fhir/MedicationRequest",
        params={"patient": patient_id, "status": "active"},
        headers=care.patient,
    )
    assert [e["resource"]["medicationCodeableConcept"]["text"] for e in active.json()["entry"]] == [
        "Metformin 500 mg tablet"
    ]
    bad = await http.get(
        "/fhir/MedicationRequest",
        params={"patient": patient_id, "status": "gone"},
        headers=care.patient,
    )
    assert bad.status_code == 400
    everything = await http.get(
        f"/fhir/Patient/{patient_id}/$everything",
        params={"_type": "MedicationRequest"},
        headers=care.patient,
    )
    assert len(everything.json()["entry"]) == 2
    assert (
        await http.get(
            "/fhir/MedicationRequest", params={"patient": patient_id}, headers=care.other_patient
        )
    ).status_code == 403
    await _ask(http, care, (await _prescribe(http, care))["id"])
    certificate = await erase_patient(
        http.app.state.services.database, patient_id, reason="asked", requested_by="dpo"
    )
    rows = certificate.document["rows_deleted"]
    assert (rows["medications"], rows["refill_requests"]) == (3, 1)
    assert await _counts(database) == (0, 0)


async def test_fhirpy_reads_medication_requests(
    database_url: str, database: Database, tmp_path: Path
) -> None:
    cast = await make_cast(database)
    with live_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            medication = await _prescribe(http, cast)
        client = AsyncFHIRClient(
            f"{server.base_url}/fhir", authorization=cast.patient["Authorization"]
        )
        found = (
            await client.resources("MedicationRequest")
            .search(patient=cast.world.patient_id)
            .fetch_all()
        )
        assert [m.id for m in found] == [medication["id"]]
        one = await client.reference("MedicationRequest", medication["id"]).to_resource()
        assert one.dosageInstruction[0].text == LISINOPRIL["dosage"]
        assert one.medicationCodeableConcept.coding[0].code == "314076"
