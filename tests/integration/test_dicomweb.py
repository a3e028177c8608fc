"""DICOMweb (STOW-RS, QIDO-RS, WADO-RS) and FHIR ImagingStudy through the real app on both
backends: what goes in by STOW comes back by WADO with the same pixels."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from PIL import Image

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.imaging import ImagingRecords
from medmesh.store.users import Organizations
from tests.conftest import World
from tests.helpers import AppClient
from tests.imaging_fixtures import dicom_bytes

REFERENCED, FAILED, RETRIEVE_URL, FAILURE = "00081199", "00081198", "00081190", "00081197"


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


def multipart(*parts: bytes, part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


async def stow(http: AppClient, world: World, *parts: bytes) -> tuple[int, dict]:
    body, content_type = multipart(*parts)
    response = await http.post(
        "/dicomweb/studies",
        content=body,
        headers={
            **world.reader_headers,
            "Content-Type": content_type,
            "Accept": "application/dicom+json",
        },
    )
    return response.status_code, response.json()


def first_part(response_body: bytes, content_type: str) -> bytes:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response_body)
    (part,) = list(message.iter_parts())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


async def test_stow_then_qido_wado_and_fhir_give_back_the_same_instance(
    http: AppClient, world: World
) -> None:
    sent = dicom_bytes("mr", patient_id="MRN-1")
    status, answer = await stow(http, world, sent)
    assert status == 200, answer
    (stored,) = answer[REFERENCED]["Value"]
    retrieve = stored[RETRIEVE_URL]["Value"][0]
    original = pydicom.dcmread(io.BytesIO(sent))

    studies = await http.get(
        "/dicomweb/studies", params={"PatientID": "MRN-1"}, headers=world.reader_headers
    )
    assert (
        studies.status_code == 200 and studies.headers["content-type"] == "application/dicom+json"
    )
    (study,) = studies.json()
    assert study["0020000D"]["Value"] == [str(original.StudyInstanceUID)]
    assert study["00080061"]["Value"] == ["MR"]
    series = (
        await http.get(
            f"/dicomweb/studies/{original.StudyInstanceUID}/series", headers=world.reader_headers
        )
    ).json()
    assert [s["0020000E"]["Value"][0] for s in series] == [str(original.SeriesInstanceUID)]
    instances = (
        await http.get(
            f"/dicomweb/studies/{original.StudyInstanceUID}/series/"
            f"{original.SeriesInstanceUID}/instances",
            headers=world.reader_headers,
        )
    ).json()
    assert [i["00080018"]["Value"][0] for i in instances] == [str(original.SOPInstanceUID)]

    wado = await http.get(retrieve.replace("http://test", ""), headers=world.reader_headers)
    assert wado.status_code == 200, wado.text
    assert wado.headers["content-type"].startswith("multipart/related")
    back = pydicom.dcmread(io.BytesIO(first_part(wado.content, wado.headers["content-type"])))
    assert back.PixelData == original.PixelData and back.SOPInstanceUID == original.SOPInstanceUID

    metadata = await http.get(
        retrieve.replace("http://test", "") + "/metadata", headers=world.reader_headers
    )
    (item,) = metadata.json()
    assert item["00100020"]["Value"] == ["MRN-1"] and "7FE00010" not in item

    fhir = await http.get(
        "/fhir/ImagingStudy", params={"patient": world.patient_id}, headers=world.reader_headers
    )
    bundle = Bundle.model_validate(fhir.json())
    (entry,) = bundle.entry or []
    resource = ImagingStudy.model_validate(entry.resource.model_dump())  # type: ignore[union-attr]
    assert resource.numberOfInstances == 1 and resource.series[0].uid == original.SeriesInstanceUID  # type: ignore[index]
    assert resource.contained[0].address.endswith("/dicomweb")  # type: ignore[index, union-attr]
    read = await http.get(f"/fhir/ImagingStudy/{resource.id}", headers=world.reader_headers)
    assert read.status_code == 200
    modality = await http.get(
        "/fhir/ImagingStudy",
        params={"patient": world.patient_id, "modality": "CT"},
        headers=world.reader_headers,
    )
    assert modality.json().get("entry", []) == []


async def test_rendered_frames_follow_the_window_and_undecodable_ones_say_so(
    http: AppClient, world: World
) -> None:
    ct = dicom_bytes("ct", patient_id="MRN-1")
    assert (await stow(http, world, ct))[0] == 200
    original = pydicom.dcmread(io.BytesIO(ct))
    path = (
        f"/dicomweb/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}"
        f"/instances/{original.SOPInstanceUID}/frames/1/rendered"
    )
    soft = await http.get(path, params={"window": "40,400"}, headers=world.reader_headers)
    bone = await http.get(path, params={"window": "500,2000"}, headers=world.reader_headers)
    assert soft.headers["content-type"] == "image/png"
    soft_pixels = np.asarray(Image.open(io.BytesIO(soft.content)))
    bone_pixels = np.asarray(Image.open(io.BytesIO(bone.content)))
    assert soft_pixels.shape == (128, 128) and soft_pixels.std() > 10  # an image, not blank
    assert not np.array_equal(soft_pixels, bone_pixels)
    jpeg = await http.get(path, headers={**world.reader_headers, "Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    bad_window = await http.get(path, params={"window": "40"}, headers=world.reader_headers)
    assert bad_window.status_code == 400
    assert "window must be center,width" in bad_window.json()["issue"][0]["diagnostics"]
    missing = await http.get(path.replace("/frames/1/", "/frames/2/"), headers=world.reader_headers)
    assert missing.status_code == 404
    # 12-bit JPEG (JPEG Extended) is stored but cannot be decoded here: a clear 415.
    extended = pydicom.dcmread(pydicom.data.get_testdata_file("JPGExtended.dcm"))
    extended.PatientID = "MRN-1"
    buffer = io.BytesIO()
    extended.save_as(buffer, enforce_file_format=True)
    assert (await stow(http, world, buffer.getvalue()))[0] == 200
    undecodable = await http.get(
        f"/dicomweb/studies/{extended.StudyInstanceUID}/series/{extended.SeriesInstanceUID}"
        f"/instances/{extended.SOPInstanceUID}/frames/1/rendered",
        headers=world.reader_headers,
    )
    assert undecodable.status_code == 415
    assert "cannot be decoded" in undecodable.json()["issue"][0]["diagnostics"]


async def test_stow_refuses_bad_parts_and_keeps_the_good_ones(
    http: AppClient, world: World
) -> None:
    good = dicom_bytes("mr", patient_id="MRN-1")
    status, answer = await stow(http, world, b"not dicom at all", good)
    assert status == 202
    (failed,) = answer[FAILED]["Value"]
    assert failed[FAILURE]["Value"] == [0xC000]
    assert len(answer[REFERENCED]["Value"]) == 1
    status, answer = await stow(http, world, dicom_bytes("mr", patient_id=None))
    assert status == 409 and REFERENCED not in answer
    wrong = await http.post(
        "/dicomweb/studies",
        content=b"{}",
        headers={**world.reader_headers, "Content-Type": "application/json"},
    )
    assert wrong.status_code == 415
    studies = await http.get("/dicomweb/studies", headers=world.reader_headers)
    assert len(studies.json()) == 1  # the good MR only
    for paging in ({"offset": str(10**20)}, {"offset": "-1"}, {"limit": "0"}, {"limit": "201"}):
        refused = await http.get("/dicomweb/studies", params=paging, headers=world.reader_headers)
        assert refused.status_code == 400, paging  # schemathesis found 10**20 reaching SQLite
        assert refused.json()["resourceType"] == "OperationOutcome"


async def test_dicomweb_shows_nothing_of_a_patient_outside_the_callers_care(
    http: AppClient, world: World, database: Database
) -> None:
    sent = dicom_bytes("mr", patient_id="MRN-1")
    assert (await stow(http, world, sent))[0] == 200
    outsider = await provisioning.create_user(
        database,
        username="dr-outside",
        display_name="dr outside",
        role=Role.CLINICIAN,
        password="correct horse battery staple",
    )
    token = await provisioning.issue_user_token(
        database, user_id=outsider.id, scopes="user/*.cruds"
    )
    headers = {"Authorization": f"Bearer {token}"}
    original = pydicom.dcmread(io.BytesIO(sent))
    assert (await http.get("/dicomweb/studies", headers=headers)).json() == []
    series = await http.get(
        f"/dicomweb/studies/{original.StudyInstanceUID}/series", headers=headers
    )
    assert series.status_code == 404
    # Nor may they file images under that patient: the request is refused whole.
    other = World(world.patient_id, world.device_id, world.device_secret, token, outsider.id)
    status, answer = await stow(
        http, other, dicom_bytes("ct", patient_id="MRN-1"), dicom_bytes("mr_rle", patient_id="X")
    )
    assert status == 403 and answer["resourceType"] == "OperationOutcome"
    async with database.read() as conn:
        assert await ImagingRecords(conn).quarantined() == []  # not even the unmatched one
    assert len((await http.get("/dicomweb/studies", headers=world.reader_headers)).json()) == 1


async def _token(
    database: Database, username: str, role: Role, organization: str
) -> dict[str, str]:
    user = await provisioning.create_user(
        database,
        username=username,
        display_name=username,
        role=role,
        password="correct horse battery staple",
        organization_id=organization,
    )
    token = await provisioning.issue_user_token(database, user_id=user.id, scopes="user/*.cruds")
    return {"Authorization": f"Bearer {token}"}


async def test_org_admin_files_or_rejects_what_waits_in_quarantine(
    http: AppClient, world: World, database: Database
) -> None:
    unmatched = dicom_bytes("mr", patient_id="WALK-IN-7")
    other = dicom_bytes("ct", patient_id="WALK-IN-8")
    status, answer = await stow(http, world, unmatched, other)
    assert status == 200
    assert all("quarantine" in i["00741048"]["Value"][0] for i in answer[REFERENCED]["Value"])
    assert (await http.get("/dicomweb/studies", headers=world.reader_headers)).json() == []

    admin = await _token(database, "imaging-admin", Role.ORG_ADMIN, "default")
    refused = await http.get("/api/v1/imaging/quarantine", headers=world.reader_headers)
    assert refused.status_code == 403  # a clinician does not handle the quarantine
    listed = await http.get("/api/v1/imaging/quarantine", headers=admin)
    assert listed.status_code == 200
    items = {i["patient_id_in_file"]: i for i in listed.json()["items"]}
    assert set(items) == {"WALK-IN-7", "WALK-IN-8"}
    assert items["WALK-IN-7"]["reason"] == "no patient has this PatientID"

    async with database.write() as conn:
        await Organizations(conn).add("elsewhere", "Elsewhere Clinic")
    stranger = await _token(database, "far-admin", Role.ORG_ADMIN, "elsewhere")
    far = await http.post(
        f"/api/v1/imaging/quarantine/{items['WALK-IN-7']['id']}/assign",
        json={"patient": world.patient_id},
        headers=stranger,
    )
    assert far.status_code == 404  # not a patient of their organisation
    filed = await http.post(
        f"/api/v1/imaging/quarantine/{items['WALK-IN-7']['id']}/assign",
        json={"patient": world.patient_id},
        headers=admin,
    )
    assert filed.status_code == 200, filed.text
    again = await http.post(
        f"/api/v1/imaging/quarantine/{items['WALK-IN-7']['id']}/assign",
        json={"patient": world.patient_id},
        headers=admin,
    )
    assert again.status_code == 409
    rejected = await http.post(
        f"/api/v1/imaging/quarantine/{items['WALK-IN-8']['id']}/reject",
        json={"reason": "wrong site"},
        headers=admin,
    )
    assert rejected.status_code == 200
    assert (await http.get("/api/v1/imaging/quarantine", headers=admin)).json() == {"items": []}
    (study,) = (await http.get("/dicomweb/studies", headers=world.reader_headers)).json()
    assert study["00080061"]["Value"] == ["MR"]  # the assigned MR; the CT is gone


async def test_imaging_studies_are_in_everything_and_bulk_export(
    http: AppClient, world: World
) -> None:
    assert (await stow(http, world, dicom_bytes("ct", patient_id="MRN-1")))[0] == 200
    everything = await http.get(
        f"/fhir/Patient/{world.patient_id}/$everything",
        params={"_type": "Patient,ImagingStudy"},
        headers=world.reader_headers,
    )
    assert everything.status_code == 200, everything.text
    kinds = [e["resource"]["resourceType"] for e in everything.json()["entry"]]
    assert kinds == ["Patient", "ImagingStudy"]
    started = await http.get(
        "/fhir/Patient/$export",
        params={"_type": "ImagingStudy"},
        headers={**world.reader_headers, "Prefer": "respond-async"},
    )
    assert started.status_code == 202, started.text
    status_url = started.headers["content-location"].replace("http://test", "")
    for _ in range(100):
        answer = await http.get(status_url, headers=world.reader_headers)
        if answer.status_code == 200:
            break
        await asyncio.sleep(0.1)
    (output,) = answer.json()["output"]
    assert output["type"] == "ImagingStudy" and output["count"] == 1
    ndjson = await http.get(output["url"].replace("http://test", ""), headers=world.reader_headers)
    study = ImagingStudy.model_validate_json(ndjson.content.splitlines()[0])
    assert study.contained[0].address == "/dicomweb"  # type: ignore[index, union-attr]
