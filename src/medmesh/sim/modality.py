"""A simulated imaging modality: sends a synthetic MR series over C-STORE, as an MRI scanner
sends its studies to a PACS (here medmesh's DICOM listener)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from medmesh.imaging.synthetic import mr_series


@dataclass(frozen=True, slots=True)
class SendResult:
    sent: int
    failed: int


def send_series(
    files: list[bytes], *, host: str, port: int, calling_ae: str, called_ae: str
) -> SendResult:
    """Send Part 10 files in one association; count the instances the SCP accepted."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"the DICOM listener at {host}:{port} refused the association")
    sent = failed = 0
    try:
        for content in files:
            status = assoc.send_c_store(dcmread(io.BytesIO(content)))
            if status and status.Status == 0x0000:
                sent += 1
            else:
                failed += 1
    finally:
        assoc.release()
    return SendResult(sent, failed)


def send_synthetic_mr(
    *,
    host: str,
    port: int,
    calling_ae: str,
    called_ae: str,
    patient_id: str,
    issuer: str | None,
    patient_name: str,
    slices: int,
) -> SendResult:
    files = mr_series(
        patient_id=patient_id, issuer=issuer, patient_name=patient_name, slices=slices
    )
    return send_series(files, host=host, port=port, calling_ae=calling_ae, called_ae=called_ae)
