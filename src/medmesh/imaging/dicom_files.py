"""Reading a DICOM instance from bytes: what medmesh checks before it stores one, and the
header it indexes. Every refusal is an InvalidInstance whose message names what was wrong,
never a value from the file."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medmesh.domain.imaging import InstanceHeader, InvalidInstance

# The transfer syntaxes medmesh stores (and offers to modalities). The file is kept as it came;
# rendering decodes what the installed decoders allow (docs/imaging.md).
STORED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)

_UID_MAX = 64


def read_instance(content: bytes) -> tuple[Dataset, InstanceHeader]:
    """Parse a DICOM Part 10 file (with its file meta) and check what medmesh needs of it."""
    try:
        dataset = dcmread(io.BytesIO(content), force=False)
        dataset.file_meta  # noqa: B018 - a file without meta has none to read
    except (InvalidDicomError, AttributeError):
        raise InvalidInstance("not a DICOM Part 10 file (no DICM preamble or file meta)") from None
    except Exception:  # pydicom raises many types for a damaged file
        raise InvalidInstance("the DICOM file could not be read (truncated or damaged)") from None
    return dataset, header_of(dataset)


def header_of(dataset: Dataset) -> InstanceHeader:
    """The indexed header of a dataset whose file meta names its transfer syntax."""
    try:
        transfer_syntax = str(dataset.file_meta.TransferSyntaxUID)
    except AttributeError:
        raise InvalidInstance("the file meta names no transfer syntax") from None
    if transfer_syntax not in STORED_TRANSFER_SYNTAXES:
        raise InvalidInstance("the transfer syntax is not supported")
    try:
        header = InstanceHeader(
            sop_instance_uid=_uid(dataset, "SOPInstanceUID"),
            sop_class_uid=_uid(dataset, "SOPClassUID"),
            study_uid=_uid(dataset, "StudyInstanceUID"),
            series_uid=_uid(dataset, "SeriesInstanceUID"),
            transfer_syntax=transfer_syntax,
            patient_id=_required_text(dataset, "PatientID"),
            issuer_of_patient_id=_text(dataset, "IssuerOfPatientID") or None,
            patient_name=_text(dataset, "PatientName"),
            patient_birth_date=_text(dataset, "PatientBirthDate"),
            modality=_text(dataset, "Modality")[:16] or "OT",
            study_started=_started(dataset),
            study_description=_text(dataset, "StudyDescription"),
            accession_number=_text(dataset, "AccessionNumber"),
            series_description=_text(dataset, "SeriesDescription"),
            series_number=_integer(dataset, "SeriesNumber"),
            body_part=_text(dataset, "BodyPartExamined"),
            instance_number=_integer(dataset, "InstanceNumber"),
            slice_position=_slice_position(dataset),
            frames=_integer(dataset, "NumberOfFrames") or 1,
        )
    except InvalidInstance:
        raise
    except Exception:  # a value pydicom cannot convert: say which part, not the value
        raise InvalidInstance("the DICOM header could not be read (damaged element)") from None
    _check_native_pixels(dataset, header)
    return header


_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}


def _check_native_pixels(dataset: Dataset, header: InstanceHeader) -> None:
    """Uncompressed pixel data must be as long as its image attributes say: a shorter one is a
    truncated transfer (compressed data is checked when decoded)."""
    if header.transfer_syntax not in _NATIVE or "PixelData" not in dataset:
        return
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples = int(dataset.get("SamplesPerPixel", 1))
        bits = int(dataset.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        raise InvalidInstance(
            "the image attributes (Rows, Columns, BitsAllocated) are missing"
        ) from None
    expected = rows * columns * samples * header.frames * bits // 8
    if len(dataset.PixelData) < expected:
        raise InvalidInstance("the pixel data is truncated")


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _required_text(dataset: Dataset, keyword: str) -> str:
    value = _text(dataset, keyword)
    if not value:
        raise InvalidInstance(f"{keyword} is missing")
    return value


def _uid(dataset: Dataset, keyword: str) -> str:
    value = _required_text(dataset, keyword)
    if len(value) > _UID_MAX or not all(c.isdigit() or c == "." for c in value):
        raise InvalidInstance(f"{keyword} is not a valid UID")
    return value


def _integer(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _slice_position(dataset: Dataset) -> float | None:
    position = dataset.get("ImagePositionPatient")
    if position is not None and len(position) == 3:
        try:
            return float(position[2])
        except (TypeError, ValueError):
            pass
    location = dataset.get("SliceLocation")
    try:
        return None if location in (None, "") else float(location)
    except (TypeError, ValueError):
        return None


def _started(dataset: Dataset) -> datetime | None:
    """StudyDate + StudyTime, read as UTC (DICOM dates carry no zone unless
    TimezoneOffsetFromUTC says so, which is applied when present)."""
    date = _text(dataset, "StudyDate")
    if len(date) != 8 or not date.isdigit():
        return None
    time = _text(dataset, "StudyTime").split(".")[0].ljust(6, "0")[:6]
    if not time.isdigit():
        time = "000000"
    try:
        naive = datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    offset = _text(dataset, "TimezoneOffsetFromUTC")
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        try:
            zoned = datetime.strptime(date + time + offset, "%Y%m%d%H%M%S%z")
            return zoned.astimezone(UTC)
        except ValueError:
            pass
    return naive.replace(tzinfo=UTC)
