"""Readings: what an adapter parsed from a device (`RawReading`) and what the pipeline stores
(`Reading`, validated, in LOINC and canonical UCUM, tied to a patient)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from medmesh.domain.vocabulary import Measure

# Namespace for observation ids derived from (device, message id): a redelivered message maps
# to the same id, so storing it again is a no-op at every layer.
_OBSERVATION_NAMESPACE = uuid.UUID("6f1c9a52-5d1e-4f0e-9a57-3c2b8d7e4a10")
_NAMESPACE_BYTES = _OBSERVATION_NAMESPACE.bytes


MAX_MESSAGE_ID_LENGTH = 128


def is_valid_message_id(message_id: str) -> bool:
    """1 to 128 printable characters: no control characters (NUL cannot be stored at all)."""
    return 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH and message_id.isprintable()


def observation_id(device_id: str, message_id: str) -> str:
    """The stable id of the observation a device's message becomes: the text of
    `uuid.uuid5(namespace, device id, 0x1f, message id)`, built from the SHA-1 digest's hex
    directly (a `UUID` object and its formatting cost ten times the hash, once per reading):
    the version nibble set to 5, the variant's two bits to 10
    (tests/unit/test_ingest_fast_paths.py)."""
    h = hashlib.sha1(
        _NAMESPACE_BYTES + f"{device_id}\x1f{message_id}".encode(), usedforsecurity=False
    ).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# The first hex digit of a UUID's clock_seq_hi_and_reserved with the RFC 4122 variant bits (10)
# set, by the digest's digit there.
_VARIANT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}


@dataclass(frozen=True, slots=True)
class RawReading:
    """One reading as a device sent it, before validation.

    `measure` is our short key (``heart-rate``) or a LOINC code. `value` is a number for a single
    measure and a mapping of component key to number for a panel (blood pressure).
    """

    message_id: str
    measure: str
    effective: datetime
    value: float | dict[str, float]
    unit: str
    # A laboratory result under a LOINC code outside the vocabulary (HL7 ORU, docs/hl7.md):
    # stored in the unit the laboratory reports, unconverted.
    laboratory_test: bool = False


@dataclass(frozen=True, slots=True)
class MeasuredValue:
    """One quantity of a reading, in the quantity's canonical UCUM unit."""

    code: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Reading:
    """A validated reading: canonical codes and units, ready to store for `patient_id`."""

    device_id: str
    message_id: str
    patient_id: str
    measure: Measure
    effective: datetime
    values: tuple[MeasuredValue, ...]
    # Derived once: the pipeline, the store and the events all ask for it.
    observation_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "observation_id", observation_id(self.device_id, self.message_id))
