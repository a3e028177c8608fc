"""Secure messages through the real app on both backends: a patient writes to their care team
with a photo, the clinician sees it unread and live, answers, and both sides' unread counts
follow; bad input is refused with a specific OperationOutcome and changes nothing; photos lose
their metadata; the messages are FHIR Communications (read, search, $everything, export) and
are erased with the patient."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.communication import Communication
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from medmesh.access.erasure import erase_patient
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.messages import Side
from medmesh.events.model import MESSAGE
from medmesh.store.database import Database
from medmesh.store.messages import Messages
from medmesh.store.schema import audit_log, message_attachments, message_threads, messages
from tests.care_fixtures import (
    PDF_BYTES,
    SECRET_CAMERA,
    SECRET_PLACE,
    CareCast,
    care,
    care_http,
    make_cast,
    photo,
    start_thread,
)
from tests.helpers import AppClient
from tests.live_server import live_server

__all__ = ["care", "care_http"]  # fixtures, used by name


async def _counts(database: Database) -> tuple[int, int, int]:
    async with database.read() as conn:
        return tuple(  # type: ignore[return-value]
            [
                int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
                for t in (message_threads, messages, message_attachments)
            ]
        )


async def test_a_patient_writes_with_a_photo_and_the_care_team_answers(
    care_http: AppClient, care: CareCast
) -> None:
    http, patient_id = care_http, care.world.patient_id
    bus = http.app.state.services.bus
    events = bus.subscribe()
    created = await start_thread(
        http, patient_id, care.patient, files=[("foot.jpg", photo(), "image/jpeg")]
    )
    assert created.status_code == 201, created.text
    thread = created.json()
    assert "emergency" in thread["notice"]
    (first,) = thread["messages"]
    assert first["side"] == "patient" and first["sender"]["name"] == "Jane Doe"
    (attachment,) = first["attachments"]
    assert attachment["content_type"] == "image/jpeg"

    event = await asyncio.wait_for(events.get(), 5)
    assert event.kind == MESSAGE and event.patient_id == patient_id
    assert event.data == {"thread_id": thread["id"], "message_id": first["id"], "side": "patient"}
    assert "wound" not in event.to_json().decode().lower()  # ids only, never the text
    events.close()

    unread = (await http.get("/api/v1/messages/unread", headers=care.clinician)).json()
    assert unread == {"total": 1, "patients": {patient_id: 1}}
    assert (await http.get("/api/v1/messages/unread", headers=care.patient)).json()["total"] == 0
    listed = await http.get(f"/api/v1/patients/{patient_id}/threads", headers=care.clinician)
    assert [(t["subject"], t["unread"]) for t in listed.json()["threads"]] == [
        ("Wound on my left foot", 1)
    ]

    # The photo comes back re-encoded: the pixels, upright, and no metadata at all.
    image = await http.get(attachment["url"], headers=care.clinician)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.headers["cache-control"] == "no-store"
    for secret in (SECRET_CAMERA, SECRET_PLACE):
        assert secret.encode() not in image.content
    with Image.open(io.BytesIO(image.content)) as shown:
        assert dict(shown.getexif()) == {}
        assert shown.size == (48, 64)  # the EXIF orientation applied to the pixels

    read = await http.post(f"/api/v1/threads/{thread['id']}/read", headers=care.clinician)
    assert read.json() == {"marked": 1}
    answered = await http.post(
        f"/api/v1/threads/{thread['id']}/messages",
        data={"body": "Please send another photo tomorrow morning."},
        headers=care.clinician,
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["side"] == "care-team"
    assert answered.json()["sender"]["name"] == "dr test"
    mine = (await http.get("/api/v1/messages/unread", headers=care.patient)).json()
    assert mine == {"total": 1, "patients": {patient_id: 1}}
    full = (await http.get(f"/api/v1/threads/{thread['id']}", headers=care.patient)).json()
    assert [m["side"] for m in full["messages"]] == ["patient", "care-team"]
    assert full["messages"][0]["read_at"] is not None  # the clinician opened it
    assert full["unread"] == 1


async def test_bad_messages_get_a_specific_outcome_and_change_nothing(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    http, patient_id = care_http, care.world.patient_id
    ok = await start_thread(http, patient_id, care.patient)
    thread_id = ok.json()["id"]
    before = await _counts(database)
    big = photo(1200, 1200) + b"\0" * 200_000
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"body": "   "}, 400, "empty"),
        ({"body": "x" * 10_001}, 400, "longer than 10000"),
        ({"subject": ""}, 400, "subject"),
        ({"category": "gossip"}, 400, "category must be one of"),
        ({"files": [("wound.jpg", b"GIF89a" + b"\0" * 50, "image/jpeg")]}, 415, "JPEG or PNG"),
        ({"files": [("wound.jpg", b"\xff\xd8\xff" + b"junk" * 20, "image/jpeg")]}, 400, "read"),
        ({"files": [("big.jpg", big, "image/jpeg")]}, 413, "larger than"),
        ({"files": [("a.pdf", PDF_BYTES, "application/pdf")] * 3}, 400, "at most 2"),
    ]
    for args, status, words in cases:
        answer = await start_thread(http, patient_id, care.patient, **args)
        assert answer.status_code == status, (args.keys(), answer.text)
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert words in outcome["issue"][0]["diagnostics"], outcome
        assert "wound" not in answer.text.lower()  # what was sent is never echoed
    empty_reply = await http.post(
        f"/api/v1/threads/{thread_id}/messages", data={"body": ""}, headers=care.clinician
    )
    assert empty_reply.status_code == 400
    assert await _counts(database) == before


async def test_nobody_else_reads_or_writes_a_patients_threads(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    http, patient_id = care_http, care.world.patient_id
    thread = (
        await start_thread(http, patient_id, care.patient, files=[("r.pdf", PDF_BYTES, "x")])
    ).json()
    attachment = thread["messages"][0]["attachments"][0]["url"]
    before = await _counts(database)
    outsiders = (care.other_patient, care.other.reader_headers)
    for headers in outsiders:
        for method, path, kwargs in (
            ("GET", f"/api/v1/threads/{thread['id']}", {}),
            ("POST", f"/api/v1/threads/{thread['id']}/messages", {"data": {"body": "hi"}}),
            ("POST", f"/api/v1/threads/{thread['id']}/read", {}),
            ("GET", attachment, {}),
            ("GET", f"/fhir/Communication/{thread['messages'][0]['id']}", {}),
        ):
            answer = await http.request(method, path, headers=headers, **kwargs)
            assert answer.status_code == 404, (method, path, answer.text)
            assert "Wound" not in answer.text
        listed = await http.get(f"/api/v1/patients/{patient_id}/threads", headers=headers)
        assert listed.status_code == 403
        written = await start_thread(http, patient_id, headers)
        assert written.status_code == 403
        unread = await http.get("/api/v1/messages/unread", headers=headers)
        assert patient_id not in unread.json()["patients"]
    assert await _counts(database) == before
    async with database.read() as conn:
        refused = (
            await conn.execute(
                select(func.count())
                .select_from(audit_log)
                .where(
                    audit_log.c.resource_type == "Communication",
                    audit_log.c.patient_id == patient_id,
                    audit_log.c.outcome == "4",
                )
            )
        ).scalar_one()
    assert refused >= 2 * 7


async def test_messages_are_fhir_communications_searchable_by_patient_sent_and_category(
    care_http: AppClient, care: CareCast
) -> None:
    http, patient_id = care_http, care.world.patient_id
    await start_thread(http, patient_id, care.patient, files=[("f.png", photo(fmt="PNG"), "x")])
    await start_thread(
        http,
        patient_id,
        care.clinician,
        subject="Your new dose",
        body="Take 10 mg from Monday.",
        category="medication",
    )
    await start_thread(http, care.other.patient_id, care.other_patient, subject="Other")
    found = await http.get(
        "/fhir/Communication", params={"patient": patient_id}, headers=care.patient
    )
    assert found.status_code == 200, found.text
    bundle = found.json()
    Bundle.model_validate(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    for resource in resources:
        Communication.model_validate(resource)
    assert [r["topic"]["text"] for r in resources] == ["Your new dose", "Wound on my left foot"]
    dose, wound = resources
    assert dose["sender"]["reference"] == f"Practitioner/{care.world.clinician_id}"
    assert dose["recipient"] == [{"reference": f"Patient/{patient_id}"}]
    assert wound["payload"][1]["contentAttachment"]["contentType"] == "image/png"

    medication = await http.get(
        "/fhir/Communication",
        params={"patient": patient_id, "category": "medication"},
        headers=care.clinician,
    )
    assert [e["resource"]["id"] for e in medication.json()["entry"]] == [dose["id"]]
    sent = wound["sent"]
    later = await http.get(
        "/fhir/Communication",
        params={"patient": patient_id, "sent": f"gt{sent}"},
        headers=care.clinician,
    )
    assert [e["resource"]["id"] for e in later.json()["entry"]] == [dose["id"]]
    # Without a patient: only what the caller may see.
    mine = await http.get("/fhir/Communication", headers=care.other_patient)
    assert {e["resource"]["subject"]["reference"] for e in mine.json()["entry"]} == {
        f"Patient/{care.other.patient_id}"
    }
    read = await http.get(f"/fhir/Communication/{dose['id']}", headers=care.patient)
    assert read.json() == dose
    for params, words in (
        ({"category": "gossip"}, "category must be one of"),
        ({"sent": "yesterday"}, "sent must be"),
        ({"_sort": "flavour"}, "_sort"),  # unknown parameters are ignored; _sort never
    ):
        bad = await http.get(
            "/fhir/Communication", params={"patient": patient_id, **params}, headers=care.patient
        )
        assert bad.status_code == 400
        assert words in bad.json()["issue"][0]["diagnostics"]


async def test_messages_are_in_everything_and_the_bulk_export(
    care_http: AppClient, care: CareCast
) -> None:
    http, patient_id = care_http, care.world.patient_id
    await start_thread(http, patient_id, care.patient)
    everything = await http.get(
        f"/fhir/Patient/{patient_id}/$everything",
        params={"_type": "Communication"},
        headers=care.patient,
    )
    assert everything.status_code == 200, everything.text
    (entry,) = everything.json()["entry"]
    Communication.model_validate(entry["resource"])
    kicked = await http.get(
        "/fhir/Patient/$export",
        params={"_type": "Communication"},
        headers={**care.clinician, "Prefer": "respond-async"},
    )
    assert kicked.status_code == 202, kicked.text
    status = kicked.headers["content-location"].replace("http://test", "")
    for _ in range(300):
        answer = await http.get(status, headers=care.clinician)
        if answer.status_code == 200:
            break
        await asyncio.sleep(0.02)
    (output,) = answer.json()["output"]
    assert output["type"] == "Communication" and output["count"] == 1
    ndjson = await http.get(output["url"].replace("http://test", ""), headers=care.clinician)
    Communication.model_validate_json(ndjson.content.splitlines()[0])


async def test_erasure_removes_threads_messages_and_attachments(
    care_http: AppClient, care: CareCast, database: Database
) -> None:
    http, patient_id = care_http, care.world.patient_id
    await start_thread(http, patient_id, care.patient, files=[("f.jpg", photo(), "x")])
    await start_thread(http, care.other.patient_id, care.other_patient)
    async with database.read() as conn:
        sealed = (
            await conn.execute(
                select(message_attachments.c.id, message_attachments.c.content).where(
                    message_attachments.c.patient_id == patient_id
                )
            )
        ).all()
    services_db = http.app.state.services.database
    certificate = await erase_patient(
        services_db, patient_id, reason="patient's request", requested_by="dpo"
    )
    rows = certificate.document["rows_deleted"]
    assert (rows["message_threads"], rows["messages"], rows["message_attachments"]) == (1, 1, 1)
    assert await _counts(database) == (1, 1, 0)  # the other patient's thread stays
    # The sealed attachment as a backup taken before erasure holds it opens no more.
    assert sealed and all(SECRET_CAMERA.encode() not in c for _, c in sealed)
    with pytest.raises(DataKeyDestroyed):
        await services_db.cipher.key(patient_id)


async def test_a_backup_taken_before_erasure_no_longer_opens_the_messages(
    care_http: AppClient, care: CareCast, database: Database, database_url: str, tmp_path: Path
) -> None:
    http, patient_id = care_http, care.world.patient_id
    await start_thread(http, patient_id, care.patient, files=[("f.jpg", photo(), "x")])
    live = http.app.state.services.database
    copy_url = None
    if database.backend == "sqlite":
        source = make_url(database_url).database
        assert source is not None
        copy_path = tmp_path / "backup-before-erasure.db"
        with sqlite3.connect(source) as db, sqlite3.connect(copy_path) as backup:
            db.backup(backup)
        copy_url = f"sqlite:///{copy_path}"
    async with live.read() as conn:
        (attachment_id,) = (await conn.execute(select(message_attachments.c.id))).scalars()
        assert (await Messages(conn).attachment(attachment_id)) is not None  # opens before
    await erase_patient(live, patient_id, reason="patient's request", requested_by="dpo")
    if copy_url is None:
        return  # PostgreSQL: the key is gone (test above); a file copy is SQLite's to show
    backup_database = Database(copy_url, cipher=live.cipher)
    try:
        async with backup_database.read() as conn:
            with pytest.raises(DataKeyDestroyed):
                await Messages(conn).threads(patient_id, Side.PATIENT)
            with pytest.raises(DataKeyDestroyed):
                await Messages(conn).attachment(attachment_id)
    finally:
        await backup_database.dispose()


async def test_fhirpy_reads_and_searches_communications(
    database_url: str, database: Database, tmp_path: Path
) -> None:
    cast = await make_cast(database)
    with live_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            created = await http.post(
                "/api/v1/threads",
                data={
                    "patient": cast.world.patient_id,
                    "subject": "Refill",
                    "body": "I am out of pills.",
                    "category": "medication",
                },
                headers=cast.patient,
            )
            assert created.status_code == 201, created.text
        message_id = created.json()["messages"][0]["id"]
        client = AsyncFHIRClient(
            f"{server.base_url}/fhir", authorization=cast.clinician["Authorization"]
        )
        found = await (
            client.resources("Communication")
            .search(patient=cast.world.patient_id, category="medication")
            .fetch_all()
        )
        assert [c.id for c in found] == [message_id]
        one = await client.reference("Communication", message_id).to_resource()
        assert one.payload[0].contentString == "I am out of pills."
        assert one.subject.reference == f"Patient/{cast.world.patient_id}"
        with pytest.raises(ResourceNotFound):
            await client.reference("Communication", "missing").to_resource()
