"""A synthetic MRI series with a proper header: a head-shaped phantom (ellipsoids of different
signal) sliced axially. The demo files one for a demo patient and `medmesh sim modality` sends
one over C-STORE, so a newcomer sees an image without finding a study. UIDs are derived from
the patient's identifier, so sending the same series twice stores it once."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

# (centre x, y, z, semi-axes a, b, c, signal): skull, brain, ventricles, a lesion
_ELLIPSOIDS = (
    (0.0, 0.0, 0.0, 0.72, 0.92, 0.85, 900.0),
    (0.0, 0.0, 0.0, 0.66, 0.86, 0.78, -500.0),
    (-0.18, 0.05, 0.1, 0.1, 0.28, 0.3, -250.0),
    (0.18, 0.05, 0.1, 0.1, 0.28, 0.3, -250.0),
    (0.3, -0.35, -0.2, 0.09, 0.09, 0.12, 450.0),
)


def _phantom(size: int, z: float) -> NDArray[np.uint16]:
    axis = np.linspace(-1.0, 1.0, size)
    x, y = np.meshgrid(axis, axis)
    image = np.zeros((size, size))
    for cx, cy, cz, a, b, c, signal in _ELLIPSOIDS:
        inside = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0
        image[inside] += signal
    rng = np.random.default_rng(int((z + 2) * 1000))
    image += rng.normal(0, 12, image.shape)
    return np.clip(image + 100, 0, 4095).astype(np.uint16)


def mr_series(
    *,
    patient_id: str,
    issuer: str | None,
    patient_name: str,
    slices: int = 24,
    size: int = 128,
    started: datetime | None = None,
    seed_suffix: str = "",
) -> list[bytes]:
    """Part 10 files of one axial MR series, in slice order (`seed_suffix`: another series
    with other UIDs for the same patient)."""
    seed = f"medmesh-synthetic-mr/{issuer or ''}/{patient_id}{seed_suffix}"
    study_uid = generate_uid(entropy_srcs=[seed, "study"])
    series_uid = generate_uid(entropy_srcs=[seed, "series"])
    frame_uid = generate_uid(entropy_srcs=[seed, "frame"])
    when = started or datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    spacing, thickness = 220.0 / size, 5.0
    files = []
    for n in range(slices):
        z = -1.0 + 2.0 * (n + 0.5) / slices
        position = (n - slices / 2) * thickness
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "instance", str(n)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID = MRImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID, ds.PatientName = patient_id, patient_name
        if issuer:
            ds.IssuerOfPatientID = issuer
        ds.Modality, ds.BodyPartExamined = "MR", "HEAD"
        ds.Manufacturer, ds.InstitutionName = "medmesh sim", "medmesh demo"
        ds.StudyDate, ds.StudyTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
        ds.TimezoneOffsetFromUTC = "+0000"
        ds.StudyDescription, ds.SeriesDescription = "MRI head", "Axial T1 (synthetic)"
        ds.AccessionNumber, ds.StudyID = "SIM0001", "1"
        ds.SeriesNumber, ds.InstanceNumber = 1, n + 1
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime = "2D", 500.0, 15.0
        ds.MagneticFieldStrength, ds.EchoTrainLength = 1.5, 1
        ds.ImagePositionPatient = [-110.0, -110.0, position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation, ds.SliceThickness = position, thickness
        ds.PixelSpacing = [spacing, spacing]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 600, 1200
        ds.PixelData = _phantom(size, z).tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    return files
