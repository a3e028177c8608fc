"""Care events through the existing webhooks, end to end: a pharmacy's (here: the care team's)
FHIR Subscription on MedicationRequest hears of each approved renewal, a Subscription on
Communication of each new message, signed as every notification is, with the changed
resources' ids only (never a medication, a dosage or a message's words); the receiver reads
them with its own token, through the access policy. Whether a subscriber is told is decided
by the policy per event (test_authorization.py has the consent cases)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from fhir.resources.R4B.medicationrequest import MedicationRequest

from medmesh.store.database import Database
from tests.care_fixtures import bearer, patient_account
from tests.conftest import World
from tests.integration.test_webhooks import (
    SQLITE_ONLY,
    StartReceiver,
    _subscribe,
    _verified,
    platform,
)
from tests.webhook_receiver import Certificates

__all__ = ["platform"]  # a fixture, used by name

NAME, DOSAGE = "Lisinopril 10 mg tablet", "one tablet every morning"


def _no_care_content(body: bytes) -> None:
    for words in (NAME, DOSAGE, "Lisinopril", "dizzy", "Refill please"):
        assert words.encode() not in body, words


async def test_an_approved_refill_reaches_a_medication_request_subscriber_by_id_only(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    database: Database,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    receiver = start_receiver(webhook_certificates.trusted)
    _, patient_token = await patient_account(database, world, "jane-doe")
    _, secret = await _subscribe(
        http, world, f"MedicationRequest?patient={world.patient_id}", receiver.url
    )
    prescribed = await http.post(
        f"/api/v1/patients/{world.patient_id}/medications",
        json={"name": NAME, "dosage": DOSAGE, "refills": 0},
        headers=world.reader_headers,
    )
    old_id = prescribed.json()["id"]
    asked = await http.post(
        f"/api/v1/medications/{old_id}/refill-requests",
        json={"note": "Refill please"},
        headers=bearer(patient_token),
    )
    assert asked.status_code == 201, asked.text
    approved = await http.post(
        f"/api/v1/refill-requests/{asked.json()['id']}/approve",
        json={"refills": 2},
        headers=world.reader_headers,
    )
    assert approved.status_code == 200, approved.text

    (request,) = await receiver.wait_for(1)  # asking is no MedicationRequest change: no POST
    bundle = _verified(request, secret)
    _no_care_content(request.body)
    entries = bundle["entry"][1:]
    assert all("resource" not in e for e in entries)
    renewal_id = entries[0]["fullUrl"].removeprefix("MedicationRequest/")
    assert entries[0]["request"] == {"method": "POST", "url": "MedicationRequest"}
    assert entries[1] == {
        "fullUrl": f"MedicationRequest/{old_id}",
        "request": {"method": "PUT", "url": f"MedicationRequest/{old_id}"},
        "response": {"status": "200 OK"},
    }
    # The receiver follows the id with its own token, through the access policy.
    read = await http.get(f"/fhir/MedicationRequest/{renewal_id}", headers=world.reader_headers)
    assert read.status_code == 200
    renewal: dict[str, Any] = read.json()
    MedicationRequest.model_validate(renewal)
    assert renewal["priorPrescription"] == {"reference": f"MedicationRequest/{old_id}"}
    assert renewal["dispenseRequest"]["numberOfRepeatsAllowed"] == 2


@SQLITE_ONLY
async def test_a_new_message_reaches_a_communication_subscriber_as_something_waiting(
    platform: tuple[httpx.AsyncClient, FastAPI],
    world: World,
    database: Database,
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, _ = platform
    receiver = start_receiver(webhook_certificates.trusted)
    _, patient_token = await patient_account(database, world, "jane-doe")
    _, secret = await _subscribe(http, world, "Communication", receiver.url)
    written = await http.post(
        "/api/v1/threads",
        data={"patient": world.patient_id, "subject": "Dizzy", "body": "I feel dizzy today"},
        headers=bearer(patient_token),
    )
    assert written.status_code == 201, written.text
    (request,) = await receiver.wait_for(1)
    bundle = _verified(request, secret)
    _no_care_content(request.body)
    assert b"Dizzy" not in request.body
    (entry,) = bundle["entry"][1:]
    assert "resource" not in entry and entry["fullUrl"].startswith("Communication/")
    message = await http.get(f"/fhir/{entry['fullUrl']}", headers=world.reader_headers)
    assert message.status_code == 200
    assert message.json()["payload"][0]["contentString"] == "I feel dizzy today"


async def test_criteria_on_care_resources_are_accepted_and_others_still_refused(
    platform: tuple[httpx.AsyncClient, FastAPI], world: World
) -> None:
    http, _ = platform
    for criteria in (
        "MedicationRequest",
        f"MedicationRequest?patient=Patient/{world.patient_id}",
        f"Communication?patient={world.patient_id}",
    ):
        await _subscribe(http, world, criteria, "https://example.org/hook")
    refused = await http.post(
        "/fhir/Subscription",
        content=orjson.dumps(
            {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "watch",
                "criteria": "MedicationRequest?status=active",
                "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
            }
        ),
        headers={**world.reader_headers, "Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 400
    assert "MedicationRequest?patient=<id>" in refused.text
