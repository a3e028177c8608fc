"""Erasure of a patient (the right to be forgotten): refused under a legal hold or within the
retention period; otherwise the patient's data key is destroyed FIRST (crypto-shredding: every
copy, replica and backup of their ciphertext becomes unreadable, even if what follows fails),
then every row about them is deleted in one transaction, and a signed certificate is issued."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from medmesh.crypto.signatures import canonical_json, sign_document, verify_document
from medmesh.domain.errors import MedmeshError
from medmesh.store.database import Database
from medmesh.store.erasure import PatientRecords, StoredCertificate

CERTIFICATE_TYPE = "medmesh-erasure-certificate/1"
STATEMENT = (
    "The patient's data key was destroyed before their rows were deleted. Every copy, replica "
    "and backup of the database holds their health data only as AES-256-GCM ciphertext under "
    "that key, which no longer exists: it cannot be decrypted. Audit records (ids only) are "
    "kept as the law requires."
)


class LegalHold(MedmeshError):
    """The patient's record is under a legal hold: it may not be erased until it is lifted."""


class WithinRetention(MedmeshError):
    """The patient's clinical data is younger than the configured retention period."""


@dataclass(frozen=True, slots=True)
class ErasureCertificate:
    """What was destroyed, signed: `document` is the canonical JSON the signature covers."""

    id: str
    patient_id: str
    document: dict[str, Any]
    signature: str

    def to_json(self) -> str:
        return json.dumps(
            {"document": self.document, "signature": self.signature}, indent=2, sort_keys=True
        )


async def set_legal_hold(database: Database, patient_id: str, on: bool) -> None:
    """Place or lift a legal hold on a patient's record."""
    async with database.write() as conn:
        await PatientRecords(conn).set_legal_hold(patient_id, on)


async def erase_patient(
    database: Database,
    patient_id: str,
    *,
    reason: str,
    requested_by: str,
    retention: timedelta | None = None,
    now: datetime | None = None,
) -> ErasureCertificate:
    """Erase the patient and return the signed certificate (also stored).

    Raises NotFound (no such patient), LegalHold, or WithinRetention (clinical data newer than
    `retention`); in each case nothing is destroyed.
    """
    if not reason.strip() or not requested_by.strip():
        raise MedmeshError("an erasure needs a reason and the name of who requested it")
    moment = now or datetime.now(UTC)
    cipher = database.cipher
    async with database.write() as conn:
        records = PatientRecords(conn)
        if await records.legal_hold(patient_id):
            raise LegalHold("the patient's record is under a legal hold; lift it first")
        if retention is not None:
            newest = await records.newest_clinical_data(patient_id)
            if newest is not None and newest > moment - retention:
                days = retention.days
                raise WithinRetention(
                    f"the patient has clinical data younger than the {days}-day retention period"
                )
        # The key goes first: a crash after this line leaves only unreadable ciphertext.
        key_id = await cipher.destroy(patient_id)
        counts = await records.delete_all(patient_id)
        certificate_id = str(uuid.uuid4())
        document: dict[str, Any] = {
            "type": CERTIFICATE_TYPE,
            "certificate_id": certificate_id,
            "patient_id": patient_id,
            "erased_at": moment.isoformat(),
            "requested_by": requested_by,
            "reason": reason,
            "rows_deleted": counts,
            "data_key_destroyed": key_id or "none (the patient had no data key)",
            "statement": STATEMENT,
            "signing_key": cipher.provider.signing_public_key().hex(),
        }
        signature = await sign_document(cipher.provider, document)
        await records.add_certificate(
            StoredCertificate(
                certificate_id,
                patient_id,
                moment,
                canonical_json(document).decode("utf-8"),
                signature,
            )
        )
    return ErasureCertificate(certificate_id, patient_id, document, signature)


def verify_certificate(text: str, public_key: bytes) -> bool:
    """Whether a certificate (as printed by `to_json`) is intact and signed by `public_key`."""
    try:
        parsed = json.loads(text)
        document, signature = parsed["document"], parsed["signature"]
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(document, dict) or not isinstance(signature, str):
        return False
    return verify_document(document, signature, public_key)
