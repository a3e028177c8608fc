"""DICOM test files: pydicom's bundled test data, re-labelled for a test patient."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmesh.imaging.archive import ImagingArchive
from medmesh.store.database import Database
from medmesh.store.imaging import ImagingRecords

# Each a different modality, transfer syntax or frame count (pydicom's test data, MIT licence).
SAMPLES = {
    "mr": "MR_small.dcm",  # MR, explicit VR little endian
    "ct": "CT_small.dcm",  # CT, explicit VR little endian
    "mr_implicit": "MR_small_implicit.dcm",  # implicit VR little endian
    "mr_rle": "MR_small_RLE.dcm",  # RLE lossless
    "mr_j2k": "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "jpeg_baseline": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, RGB
    "multiframe": "rtdose.dcm",  # 15 frames
}


def sample_path(name: str) -> Path:
    path = get_testdata_file(SAMPLES[name])
    assert isinstance(path, str), f"pydicom's test file {SAMPLES[name]} is missing"
    return Path(path)


def relabelled(
    source: Path,
    target: Path,
    *,
    patient_id: str | None,
    issuer: str | None = None,
    sop_suffix: str | None = None,
) -> Path:
    """A copy of a test file for our patient (or with no PatientID), with fresh UIDs when asked
    so one source file can be two instances."""
    dataset = pydicom.dcmread(source)
    if patient_id is None:
        if "PatientID" in dataset:
            del dataset.PatientID
    else:
        dataset.PatientID = patient_id
    if issuer is not None:
        dataset.IssuerOfPatientID = issuer
    if sop_suffix is not None:
        dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{sop_suffix}"
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture
def dcmtk() -> None:
    """dcmtk's command-line tools (Debian package dcmtk): .ci/run installs them."""
    import os

    if shutil.which("storescu") is None:
        if os.environ.get("CI"):
            pytest.fail("dcmtk (storescu, echoscu, findscu) is not installed")
        pytest.skip("dcmtk is not installed (apt install dcmtk)")


def dicom_bytes(name: str, *, patient_id: str | None, sop_suffix: str | None = None) -> bytes:
    """A test file relabelled for a patient, as the bytes a modality would send."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = relabelled(
            sample_path(name), Path(folder) / "x.dcm", patient_id=patient_id, sop_suffix=sop_suffix
        )
        return path.read_bytes()


@dataclass(frozen=True, slots=True)
class Filed:
    study_id: str
    study_uid: str
    series_uid: str
    instance_uid: str


async def file_study(database: Database, name: str, patient_identifier: str) -> Filed:
    """File a test instance for the patient with this identifier."""
    receipt = await ImagingArchive(database).receive(
        dicom_bytes(name, patient_id=patient_identifier), "TEST@127.0.0.1"
    )
    assert receipt.patient_id is not None, receipt.reason
    async with database.read() as conn:
        (study,) = [
            s
            for s in await ImagingRecords(conn).search(within=[receipt.patient_id], limit=100)
            if s.uid == receipt.header.study_uid
        ]
    header = receipt.header
    return Filed(study.id, header.study_uid, header.series_uid, header.sop_instance_uid)
