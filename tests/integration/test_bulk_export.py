"""FHIR Bulk Data $export end to end through the real app on both backends: kick-off, status,
manifest, NDJSON files, filters, groups, ownership, cancel, expiry and restart."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from sqlalchemy import func, select

from medmesh import provisioning, wiring
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.fhir.export_jobs import ExportRunner, new_job
from medmesh.store.database import Database
from medmesh.store.exports import RUNNING, ExportFile, ExportJobs, export_key_owner
from medmesh.store.schema import care_team_members, export_files, export_jobs
from tests.export_fixtures import (
    A_READINGS,
    B_READINGS,
    Clinic,
    ExportApp,
    add_alert,
    export_app,
    ingest,
    kick_off,
    make_clinic,
    move_to_organization,
    now,
    other_token,
    wait_for_manifest,
)
from tests.helpers import BASE_TIME, minute_series, stamp

__all__ = ["export_app"]  # the fixture, used by name

MODELS: dict[str, Any] = {
    "Patient": Patient,
    "Device": Device,
    "Observation": Observation,
    "Flag": Flag,
    "OperationOutcome": OperationOutcome,
}


async def _download(
    http: httpx.AsyncClient, manifest: dict[str, Any], headers: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Every output file's resources by type; checks each line and each manifest count."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"] + manifest["error"]:
        response = await http.get(item["url"], headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = response.content.splitlines()
        assert response.content.endswith(b"\n")
        assert len(lines) == item["count"]
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == item["type"]
            MODELS[item["type"]].model_validate(resource)
            by_type.setdefault(item["type"], []).append(resource)
    return by_type


async def _stored_files(database: Database, status_url: str) -> int:
    job_id = status_url.rsplit("/", 1)[1]
    async with database.read() as conn:
        query = (
            select(func.count()).select_from(export_files).where(export_files.c.job_id == job_id)
        )
        return int((await conn.execute(query)).scalar_one())


async def test_patient_export_runs_to_a_manifest_of_valid_ndjson_files(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    status_url = await kick_off(http, "/fhir/Patient/$export", headers)
    assert status_url.startswith("http://test/fhir/$export-status/")

    manifest = await wait_for_manifest(http, status_url, headers)
    assert set(manifest) == {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    assert manifest["request"] == "http://test/fhir/Patient/$export"
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z")
    counts: dict[str, int] = {}
    for item in manifest["output"]:
        assert set(item) == {"type", "url", "count"}
        counts[item["type"]] = counts.get(item["type"], 0) + item["count"]
    observations = A_READINGS + B_READINGS
    assert counts == {"Patient": 2, "Device": 2, "Flag": 2, "Observation": observations}
    # Files hold at most 7 resources here (export_file_resources=7): 50 observations, 8 files.
    assert sum(1 for i in manifest["output"] if i["type"] == "Observation") == 8

    found = await _download(http, manifest, headers)
    assert {p["id"] for p in found["Patient"]} == {clinic.a.patient_id, clinic.b_patient_id}
    assert {d["id"] for d in found["Device"]} == {clinic.a.device_id, clinic.b_device_id}
    ids = [o["id"] for o in found["Observation"]]
    assert len(set(ids)) == observations
    # At rest the files are ciphertext under the job's key, which is not in the main database.
    async with database.read() as conn:
        stored = (await conn.execute(select(export_files))).mappings().all()
    assert stored and all(b"resourceType" not in f["data"] for f in stored)
    assert clinic.a.patient_id.encode() not in b"".join(f["data"] for f in stored)
    assert {f["wrapped_key"] for f in stored} == {b""}
    job_id = status_url.rsplit("/", 1)[1]
    assert await database.cipher.keys.get(export_key_owner(job_id)) is not None


async def test_type_and_since_choose_what_is_exported(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    status_url = await kick_off(
        http,
        "/fhir/Patient/$export",
        headers,
        _type="Patient,Observation",
        _outputFormat="application/fhir+ndjson",
    )
    manifest = await wait_for_manifest(http, status_url, headers)
    assert {i["type"] for i in manifest["output"]} == {"Patient", "Observation"}

    since = now()
    await ingest(
        http,
        clinic.b_device_headers,
        minute_series(4, start=BASE_TIME + timedelta(hours=1), prefix="late"),
    )
    await add_alert(database, clinic.a.patient_id, now())
    status_url = await kick_off(
        http, "/fhir/Patient/$export", headers, _type="Observation,Flag", _since=stamp(since)
    )
    found = await _download(http, await wait_for_manifest(http, status_url, headers), headers)
    assert len(found["Observation"]) == 4
    assert {o["subject"]["reference"] for o in found["Observation"]} == {
        f"Patient/{clinic.b_patient_id}"
    }
    assert len(found["Flag"]) == 1


async def test_group_export_holds_only_the_groups_members(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    await move_to_organization(database, "north", clinic.b_patient_id)
    # The north clinic's own backend service.
    token = await provisioning.issue_service_token(
        database, name="north EHR", organization_id="north", scopes="system/*.rs"
    )
    http, headers = export_app.http, {"Authorization": f"Bearer {token}"}

    group = await http.get("/fhir/Group/north", headers=headers)
    assert group.status_code == 200
    Group.model_validate(group.json())
    assert group.json()["member"] == [{"entity": {"reference": f"Patient/{clinic.b_patient_id}"}}]

    status_url = await kick_off(http, "/fhir/Group/north/$export", headers)
    found = await _download(http, await wait_for_manifest(http, status_url, headers), headers)
    assert [p["id"] for p in found["Patient"]] == [clinic.b_patient_id]
    assert [d["id"] for d in found["Device"]] == [clinic.b_device_id]
    assert len(found["Observation"]) == B_READINGS
    everyone = {r.get("subject", {}).get("reference") for rs in found.values() for r in rs}
    assert f"Patient/{clinic.a.patient_id}" not in everyone

    missing = await http.get(
        "/fhir/Group/south/$export", headers={**headers, "Prefer": "respond-async"}
    )
    assert missing.status_code == 404


async def test_kick_off_refuses_requests_it_cannot_honour(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    no_prefer = await http.get("/fhir/Patient/$export", headers=headers)
    assert no_prefer.status_code == 400
    OperationOutcome.model_validate(no_prefer.json())
    assert "Prefer: respond-async" in no_prefer.json()["issue"][0]["diagnostics"]
    asynchronous = {**headers, "Prefer": "respond-async"}
    for params, words in [
        ({"_outputFormat": "text/csv"}, "ndjson"),
        ({"_type": "Patient,Medication"}, "Medication"),
        ({"_since": "last week"}, "_since"),
        ({"_typeFilter": "Observation?code=8867-4"}, "_typeFilter"),
    ]:
        response = await http.get("/fhir/Patient/$export", params=params, headers=asynchronous)
        assert response.status_code == 400, params
        assert words in response.json()["issue"][0]["diagnostics"]
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(export_jobs))).scalar() == 0


async def test_unknown_jobs_and_files_are_not_found(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    for response in [
        await http.get("/fhir/$export-status/no-such-job", headers=headers),
        await http.delete("/fhir/$export-status/no-such-job", headers=headers),
        await http.get("/fhir/$export-file/no-such-job/Patient-1.ndjson", headers=headers),
    ]:
        assert response.status_code == 404
        OperationOutcome.model_validate(response.json())
    status_url = await kick_off(http, "/fhir/Patient/$export", headers)
    manifest = await wait_for_manifest(http, status_url, headers)
    job_url = manifest["output"][0]["url"].rsplit("/", 1)[0]
    response = await http.get(f"{job_url}/Medication-1.ndjson", headers=headers)
    assert response.status_code == 404


async def test_another_token_cannot_see_a_job_or_its_files(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    status_url = await kick_off(http, "/fhir/Patient/$export", headers)
    manifest = await wait_for_manifest(http, status_url, headers)
    intruder = await other_token(database)
    unknown = await http.get("/fhir/$export-status/no-such-job", headers=headers)
    for response in [
        await http.get(status_url, headers=intruder),
        await http.get(manifest["output"][0]["url"], headers=intruder),
        await http.delete(status_url, headers=intruder),
    ]:
        assert response.status_code == 404
        assert response.json() == unknown.json()  # not even that the job exists
    still = await http.get(status_url, headers=headers)
    assert still.status_code == 200  # the intruder's DELETE cancelled nothing
    assert (await http.get(status_url)).status_code == 401


async def test_delete_cancels_the_export_and_removes_its_files(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    status_url = await kick_off(http, "/fhir/Patient/$export", headers)
    manifest = await wait_for_manifest(http, status_url, headers)
    assert await _stored_files(database, status_url) == len(manifest["output"])

    cancelled = await http.delete(status_url, headers=headers)
    assert cancelled.status_code == 202
    assert await _stored_files(database, status_url) == 0
    assert (await http.get(status_url, headers=headers)).status_code == 404
    assert (await http.get(manifest["output"][0]["url"], headers=headers)).status_code == 404
    assert (await http.delete(status_url, headers=headers)).status_code == 404


async def test_expiry_sweep_deletes_old_exports_and_their_files(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    status_url = await kick_off(http, "/fhir/Patient/$export", headers)
    await wait_for_manifest(http, status_url, headers)
    runner: ExportRunner = export_app.app.state.services.exports

    assert await runner.sweep(now() + timedelta(hours=23)) == 0  # default expiry: 24 h
    assert (await http.get(status_url, headers=headers)).status_code == 200
    assert await runner.sweep(now() + timedelta(hours=25)) == 1
    assert await _stored_files(database, status_url) == 0
    assert (await http.get(status_url, headers=headers)).status_code == 404
    # The files' key is destroyed with them: a backup holding the files cannot open them.
    job_id = status_url.rsplit("/", 1)[1]
    assert await database.cipher.keys.get(export_key_owner(job_id)) is None


async def test_a_job_left_running_by_a_stopped_server_is_run_again_on_start(
    database_url: str, database: Database
) -> None:
    settings = Settings(database_url=database_url, auto_migrate=False)
    first = create_app(settings)
    async with (
        first.router.lifespan_context(first),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://test") as h,
    ):
        clinic: Clinic = await make_clinic(database, h)
    # What a crash mid-export leaves: a running job with one partial file.
    from medmesh.access.identity.credentials import hash_secret
    from medmesh.store.tokens import ApiTokens

    async with database.read() as conn:
        token = await ApiTokens(conn).find_by_hash(
            hash_secret(clinic.headers["Authorization"].removeprefix("Bearer "))
        )
    assert token is not None
    job = new_job(
        token_id=token.id,
        request_url="http://test/fhir/Patient/$export",
        kind="patient",
        patient_ids=[clinic.a.patient_id],
        types=("Patient", "Observation"),
        since=None,
        expiry=timedelta(hours=24),
    )
    async with database.write() as conn:
        jobs = ExportJobs(conn)
        await jobs.add(job)
        assert await jobs.claim(job.id)
        partial = ExportFile("Observation-1.ndjson", "Observation", 1, b"{}\n", b"", "none")
        await jobs.add_file(job.id, partial)
        assert await jobs.status(job.id) == RUNNING

    second = create_app(settings)
    async with (
        second.router.lifespan_context(second),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://test") as h,
    ):
        status_url = f"http://test/fhir/$export-status/{job.id}"
        manifest = await wait_for_manifest(h, status_url, clinic.headers)
        found = await _download(h, manifest, clinic.headers)
    assert len(found["Observation"]) == A_READINGS  # the partial file was replaced
    assert [p["id"] for p in found["Patient"]] == [clinic.a.patient_id]


async def test_a_care_team_panel_is_a_group_of_the_clinicians_patients(
    export_app: ExportApp, database: Database
) -> None:
    clinic = await make_clinic(database, export_app.http)
    http, headers = export_app.http, clinic.headers
    nurse = await provisioning.create_user(
        database,
        username="nurse.north",
        display_name="Nurse North",
        role=Role.CLINICIAN,
        password="a long enough passphrase for tests",
    )
    async with database.write() as conn:
        await conn.execute(
            care_team_members.insert().values(
                patient_id=clinic.a.patient_id,
                user_id=nurse.id,
                role="nurse",
                added_at=now(),
                added_by="test",
            )
        )
    group = await http.get(f"/fhir/Group/care-team-{nurse.id}", headers=headers)
    assert group.status_code == 200
    Group.model_validate(group.json())
    assert group.json()["member"] == [{"entity": {"reference": f"Patient/{clinic.a.patient_id}"}}]
    status_url = await kick_off(http, f"/fhir/Group/care-team-{nurse.id}/$export", headers)
    found = await _download(http, await wait_for_manifest(http, status_url, headers), headers)
    assert [p["id"] for p in found["Patient"]] == [clinic.a.patient_id]
    assert len(found["Observation"]) == A_READINGS
    assert (await http.get("/fhir/Group/care-team-nobody", headers=headers)).status_code == 404


async def test_a_job_queued_where_no_runner_runs_waits_until_a_runner_claims_it(
    database_url: str, database: Database
) -> None:
    settings = Settings(database_url=database_url, auto_migrate=False, export_runner=False)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as h,
    ):
        clinic = await make_clinic(database, h)
        status_url = await kick_off(h, "/fhir/Patient/$export", clinic.headers, _type="Patient")
        waiting = await h.get(status_url, headers=clinic.headers)
        assert waiting.status_code == 202
        assert waiting.headers["x-progress"] == "queued"
        # Another process's runner (here: one made by hand) claims and runs it.
        await ExportRunner(
            database, wiring.export_settings(app.state.services.settings)
        ).run_queued()
        manifest = await wait_for_manifest(h, status_url, clinic.headers)
    assert [(i["type"], i["count"]) for i in manifest["output"]] == [("Patient", 2)]


async def test_a_cancelled_job_can_store_no_further_file(database: Database) -> None:
    job = new_job(
        token_id="t",
        request_url="http://test/fhir/Patient/$export",
        kind="patient",
        patient_ids=[],
        types=("Patient",),
        since=None,
        expiry=timedelta(hours=1),
    )
    file = ExportFile("Patient-1.ndjson", "Patient", 1, b"{}\n", b"", "none")
    async with database.write() as conn:
        jobs = ExportJobs(conn)
        await jobs.add(job)
        assert await jobs.claim(job.id)
        assert await jobs.add_file_if_running(job.id, file)
        assert await jobs.cancel(job.id, now())
        assert await jobs.files(job.id) == []
        later = ExportFile("Patient-2.ndjson", "Patient", 1, b"{}\n", b"", "none")
        assert not await jobs.add_file_if_running(job.id, later)
        assert await jobs.files(job.id) == []
        assert not await jobs.claim(job.id)
