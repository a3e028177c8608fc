"""The DICOM receiver with real peers: dcmtk's echoscu, storescu and findscu from Debian, and
pynetdicom as a second SCU, on both backends."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from medmesh import wiring
from medmesh.access.erasure import erase_patient
from medmesh.config import Settings
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.imaging import QuarantineStatus
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.dicom_server import DicomServer, DicomSettings
from medmesh.store.database import Database
from medmesh.store.imaging import ImagingRecords
from medmesh.store.schema import imaging_instances, imaging_quarantine
from tests.conftest import World
from tests.imaging_fixtures import dcmtk as dcmtk_installed
from tests.imaging_fixtures import relabelled, sample_path
from tests.integration.test_mllp_security import _client_context, _Pki, pki

pytestmark = pytest.mark.usefixtures("dcmtk_installed")
_ = (dcmtk_installed, pki)

MODALITY = "MODALITY1"


@pytest.fixture
async def scp(database: Database) -> AsyncIterator[DicomServer]:
    settings = DicomSettings(
        host="127.0.0.1",
        port=0,
        ae_title="MEDMESH",
        allowed={MODALITY: frozenset({"127.0.0.1"}), "ELSEWHERE": frozenset({"10.9.9.9"})},
        max_instance_bytes=1_000_000,
    )
    server = DicomServer(ImagingArchive(database, max_instance_bytes=1_000_000), settings)
    await server.start()
    yield server
    await server.stop()


async def dcmtk(tool: str, *args: str, calling: str = MODALITY) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool off the event loop (the SCP stores through this loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [tool, "-aet", calling, "-aec", "MEDMESH", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _instances(database: Database) -> int:
    async with database.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(imaging_instances))).scalar_one()
        )


async def test_echo_answers_allowed_modalities_only(scp: DicomServer) -> None:
    port = str(scp.port)
    assert (await dcmtk("echoscu", "127.0.0.1", port)).returncode == 0
    refused = await dcmtk("echoscu", "127.0.0.1", port, calling="STRANGER")
    assert refused.returncode != 0
    assert "Rejected" in refused.stderr + refused.stdout or "reject" in refused.stderr.lower()
    # A listed title connecting from another address than its own is refused too.
    wrong_host = await dcmtk("echoscu", "127.0.0.1", port, calling="ELSEWHERE")
    output = wrong_host.stderr + wrong_host.stdout
    assert wrong_host.returncode != 0 or "Echo Failed" in output, output


async def test_storescu_files_each_instance_under_the_patient_and_keeps_the_pixels(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    names = ["mr", "ct", "mr_rle", "mr_j2k", "jpeg_baseline", "multiframe"]
    files = []
    for name in names:
        suffix = {"mr_rle": "9", "mr_j2k": "8"}.get(name)  # new instances of the same MR
        target = tmp_path / f"{name}-{suffix}.dcm"
        files.append(relabelled(sample_path(name), target, patient_id="MRN-1", sop_suffix=suffix))
    # One association per file, proposing the file's own transfer syntax: compressed ones
    # arrive compressed (storescu's -xr RLE, -xv JPEG 2000 lossless, -xy JPEG baseline).
    proposal = {"mr_rle": "-xr", "mr_j2k": "-xv", "jpeg_baseline": "-xy"}
    for name, file in zip(names, files, strict=True):
        flags = [proposal[name]] if name in proposal else []
        result = await dcmtk("storescu", *flags, "127.0.0.1", str(scp.port), str(file))
        assert result.returncode == 0, result.stderr
    async with database.read() as conn:
        records = ImagingRecords(conn)
        studies = await records.search(within=[world.patient_id], limit=50)
        modalities = {m for s in studies for m in s.modalities}
        assert {"MR", "CT", "RTDOSE"} <= modalities
        stored = {}
        for study in studies:
            for series in study.series:
                for instance in await records.instances(series.id):
                    stored[instance.sop_instance_uid] = (instance, await records.content(instance))
    assert len(stored) == 6
    for path in files:
        sent = pydicom.dcmread(path)
        instance, content = stored[str(sent.SOPInstanceUID)]
        received = pydicom.dcmread(io.BytesIO(content))
        assert received.PixelData == sent.PixelData
        assert str(received.file_meta.TransferSyntaxUID) == instance.transfer_syntax
    multiframe = next(i for i, _ in stored.values() if i.frames > 1)
    assert multiframe.frames == 15


async def test_a_second_copy_of_an_instance_is_stored_once(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    file = relabelled(sample_path("mr"), tmp_path / "mr.dcm", patient_id="MRN-1")
    for _ in range(2):
        assert (await dcmtk("storescu", "127.0.0.1", str(scp.port), str(file))).returncode == 0
    # The same instance in another transfer syntax is still the same instance.
    rle = relabelled(sample_path("mr_rle"), tmp_path / "rle.dcm", patient_id="MRN-1")
    assert (await dcmtk("storescu", "-xr", "127.0.0.1", str(scp.port), str(rle))).returncode == 0
    assert await _instances(database) == 1


async def test_unmatched_patient_waits_in_quarantine_until_assigned(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    file = relabelled(sample_path("ct"), tmp_path / "ct.dcm", patient_id="NOBODY-42")
    assert (await dcmtk("storescu", "127.0.0.1", str(scp.port), str(file))).returncode == 0
    assert await _instances(database) == 0
    async with database.read() as conn:
        (waiting,) = await ImagingRecords(conn).quarantined()
    assert waiting.reason == "no patient has this PatientID"
    assert waiting.source == f"{MODALITY}@127.0.0.1"
    archive = ImagingArchive(database)
    receipt = await archive.assign(waiting.id, world.patient_id, by="admin-1")
    assert receipt.patient_id == world.patient_id
    assert await _instances(database) == 1
    async with database.read() as conn:
        item = await ImagingRecords(conn).quarantined_item(waiting.id)
        assert item is not None and item.status is QuarantineStatus.ASSIGNED
        content = (
            await conn.execute(
                select(imaging_quarantine.c.content).where(imaging_quarantine.c.id == waiting.id)
            )
        ).scalar_one()
    assert content is None  # the quarantined copy is gone, and its key with it
    with pytest.raises(DataKeyDestroyed):
        await database.cipher.key(f"quarantine:{waiting.id}")


async def test_rejecting_a_quarantined_instance_destroys_it(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    file = relabelled(sample_path("ct"), tmp_path / "ct.dcm", patient_id="NOBODY-42")
    assert (await dcmtk("storescu", "127.0.0.1", str(scp.port), str(file))).returncode == 0
    async with database.read() as conn:
        (waiting,) = await ImagingRecords(conn).quarantined()
    await ImagingArchive(database).reject(waiting.id, by="admin-1")
    async with database.read() as conn:
        assert await ImagingRecords(conn).quarantined() == []
        with pytest.raises(DataKeyDestroyed):
            await ImagingRecords(conn).quarantined_content(waiting.id)


def _send(port: int, dataset: Dataset, calling: str = MODALITY) -> Dataset:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDMESH")
    assert assoc.is_established
    try:
        status: Dataset = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return status


async def test_bad_instances_get_failure_statuses_and_store_nothing(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    no_patient = pydicom.dcmread(
        relabelled(sample_path("mr"), tmp_path / "np.dcm", patient_id=None)
    )
    status = await asyncio.to_thread(_send, scp.port, no_patient)
    assert status.Status == 0xC000
    assert "PatientID is missing" in status.ErrorComment
    big = pydicom.dcmread(relabelled(sample_path("mr"), tmp_path / "big.dcm", patient_id="MRN-1"))
    big.SOPInstanceUID = big.SOPInstanceUID + ".77"
    big.add_new(0x00091010, "OB", b"\0" * 1_100_000)  # a private element over the 1 MB limit
    status = await asyncio.to_thread(_send, scp.port, big)
    assert status.Status == 0xA700
    # The listener is still up and stores a good instance after the refusals.
    good = pydicom.dcmread(relabelled(sample_path("mr"), tmp_path / "ok.dcm", patient_id="MRN-1"))
    status = await asyncio.to_thread(_send, scp.port, good)
    assert status.Status == 0x0000
    assert await _instances(database) == 1


async def test_findscu_finds_the_patients_studies(
    scp: DicomServer, database: Database, world: World, tmp_path: Path
) -> None:
    file = relabelled(sample_path("ct"), tmp_path / "ct.dcm", patient_id="MRN-1")
    assert (await dcmtk("storescu", "127.0.0.1", str(scp.port), str(file))).returncode == 0
    study_uid = str(pydicom.dcmread(file).StudyInstanceUID)
    found = await dcmtk(
        "findscu",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=MRN-1",
        "-k",
        "StudyInstanceUID",
        "-k",
        "ModalitiesInStudy",
        "127.0.0.1",
        str(scp.port),
    )
    assert found.returncode == 0, found.stderr
    assert study_uid in found.stderr + found.stdout
    # pynetdicom as a second SCU: a date range that excludes the study finds nothing.

    def query(date: str) -> list[Dataset]:
        ae = AE(ae_title=MODALITY)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDMESH")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = "MRN-1"
        identifier.StudyDate = date
        identifier.StudyInstanceUID = ""
        try:
            return [
                match
                for status, match in assoc.send_c_find(
                    identifier, StudyRootQueryRetrieveInformationModelFind
                )
                if status and status.Status == 0xFF00 and match is not None
            ]
        finally:
            assoc.release()

    assert [m.StudyInstanceUID for m in await asyncio.to_thread(query, "20040101-20041231")] == [
        study_uid
    ]
    assert await asyncio.to_thread(query, "20200101-") == []


async def test_erasure_removes_studies_and_a_copy_of_the_files_no_longer_opens(
    scp: DicomServer, database: Database, database_url: str, world: World, tmp_path: Path
) -> None:
    file = relabelled(sample_path("mr"), tmp_path / "mr.dcm", patient_id="MRN-1")
    assert (await dcmtk("storescu", "127.0.0.1", str(scp.port), str(file))).returncode == 0
    async with database.read() as conn:
        sealed = (await conn.execute(select(imaging_instances.c.content))).scalars().all()
        (instance_id,) = (await conn.execute(select(imaging_instances.c.id))).scalars().all()
        instance = await ImagingRecords(conn).instance(instance_id)
        assert instance is not None and await ImagingRecords(conn).content(instance)  # opens
    assert sealed and all(b"DICM" not in content for content in sealed)  # sealed, not plain
    copy_url = None
    if database.backend == "sqlite":  # a backup taken before erasure (a file copy)
        source = make_url(database_url).database
        assert source is not None
        copy_path = tmp_path / "backup-before-erasure.db"
        with sqlite3.connect(source) as db, sqlite3.connect(copy_path) as backup:
            db.backup(backup)
        copy_url = f"sqlite:///{copy_path}"
    certificate = await erase_patient(
        database, world.patient_id, reason="patient's request", requested_by="dpo"
    )
    rows = certificate.document["rows_deleted"]
    assert (rows["imaging_studies"], rows["imaging_series"], rows["imaging_instances"]) == (1, 1, 1)
    assert await _instances(database) == 0
    with pytest.raises(DataKeyDestroyed):
        await database.cipher.key(world.patient_id)
    if copy_url is not None:
        backup_database = Database(copy_url, cipher=database.cipher)
        try:
            async with backup_database.read() as conn:
                with pytest.raises(DataKeyDestroyed):
                    await ImagingRecords(conn).content(instance)
        finally:
            await backup_database.dispose()


def _echo_over_tls(port: int, context: ssl.SSLContext) -> bool:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDMESH", tls_args=(context, "localhost"))
    except (ssl.SSLError, OSError):
        return False
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()


async def test_dicom_over_tls_requires_a_client_certificate_from_the_configured_ca(
    database: Database, pki: _Pki
) -> None:
    settings = Settings(
        dicom_port=0,
        dicom_allowed_aes=f"{MODALITY}@127.0.0.1",
        dicom_cert_file=str(pki.server_cert),
        dicom_key_file=str(pki.server_key),
        dicom_client_ca_file=str(pki.ca),
    )
    dicom = wiring.dicom_settings(settings)
    assert dicom is not None and dicom.tls is not None
    server = DicomServer(ImagingArchive(database), dicom)
    await server.start()
    try:
        port = server.port
        ours = _client_context(pki, (pki.client_cert, pki.client_key))
        rogue = _client_context(pki, (pki.rogue_cert, pki.rogue_key))
        none = _client_context(pki, None)
        assert await asyncio.to_thread(_echo_over_tls, port, ours)
        assert not await asyncio.to_thread(_echo_over_tls, port, rogue)
        assert not await asyncio.to_thread(_echo_over_tls, port, none)
    finally:
        await server.stop()
