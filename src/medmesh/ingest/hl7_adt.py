"""HL7 v2 ADT messages from a hospital's patient administration system, read into patient
demographics (A01 admit, A04 register, A08 update, A28 add, A31 update person) and merges
(A40, and the older A34 and A39 taken the same way). No I/O: the MLLP adapter applies them
(patient_feed.py) and builds the ACK.

- PID-3: every repetition (CX id^^^assigning authority^type) finds the patient; the record's
  own identifier is the repetition typed MR (CX-5), else the first, with the assigning
  authority's namespace id (CX-4.1, else its universal id CX-4.2) as its system.
- PID-5 family^given (required), PID-7 birth date, PID-8 sex (M/F/O/U), PID-11 address,
  PID-13 phone.
- A40 merge patient, A34 merge patient ID only, A39 merge person: PID is the surviving patient,
  MRG-1 (else MRG-4, the prior patient id A34 and A39 may use) the identifiers of the one
  merged into it. medmesh's patient is the person and holds their identifiers, so merging the
  identifiers (A34) or the person (A39) is merging the two records, as A40 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import hl7  # type: ignore[import-untyped]

from medmesh.domain.errors import RejectReason
from medmesh.domain.registry import PostalAddress
from medmesh.ingest.hl7_oru import (
    MAX_CONTROL_ID,
    MessageRejected,
    PatientIdentifier,
    field_repetitions,
    field_value,
    walk,
)

DEMOGRAPHIC_EVENTS = frozenset({"A01", "A04", "A08", "A28", "A31"})
MERGE_EVENTS = frozenset({"A34", "A39", "A40"})
DEFAULT_SYSTEM = "urn:medmesh:mrn"
_GENDERS = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}


@dataclass(frozen=True, slots=True)
class Demographics:
    """A patient as an ADT message describes them."""

    identifiers: tuple[PatientIdentifier, ...]
    system: str  # of the record's own identifier
    value: str
    family: str
    given: str
    birth_date: date | None
    gender: str | None
    address: PostalAddress | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class AdtMessage:
    source: Any  # hl7.Message, for the ACK
    control_id: str
    event: str
    patient: Demographics
    merged: tuple[PatientIdentifier, ...] = ()  # A40: MRG-1, the patient that goes away


def message_type(text: str) -> tuple[str, str]:
    """MSH-9 message code and trigger event, ("", "") when the text is not HL7 at all."""
    try:
        message = hl7.parse(_normalised(text))
        return field_value(message[0], 9, 1), field_value(message[0], 9, 2)
    except Exception:  # garbage: the ORU reader refuses it with the specific reason
        return "", ""


def _normalised(text: str) -> str:
    return text.replace("\r\n", "\r").replace("\n", "\r").strip()


def _refuse(detail: str, hl7_error: str, message: Any, control_id: str, where: Any) -> Exception:
    return MessageRejected(RejectReason.MALFORMED, detail, hl7_error, message, control_id, where)


def _cx(repetition: Any) -> tuple[PatientIdentifier, str, str]:
    """One CX: the identifier, its system, its type code."""
    value = walk(repetition, (1, 1)).strip()
    namespace, universal = walk(repetition, (4, 1)).strip(), walk(repetition, (4, 2)).strip()
    authorities = tuple(a for a in (namespace, universal) if a)
    system = namespace or universal or DEFAULT_SYSTEM
    return PatientIdentifier(value, authorities), system, walk(repetition, (5, 1)).strip()


def _identifiers(segment: Any, field: int) -> list[tuple[PatientIdentifier, str, str]]:
    found = [_cx(r) for r in field_repetitions(segment, field)]
    return [f for f in found if f[0].value]


def _birth_date(text: str) -> date | None:
    if not text:
        return None
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise ValueError("PID-7 birth date must be an HL7 date, YYYYMMDD") from None


def _address(segment: Any) -> PostalAddress | None:
    lines = tuple(
        line for line in (field_value(segment, 11, 1), field_value(segment, 11, 2)) if line
    )
    parts = [field_value(segment, 11, n) or None for n in (3, 4, 5, 6)]
    if not lines and not any(parts):
        return None
    return PostalAddress(lines, *parts)


def _phone(segment: Any) -> str | None:
    number = field_value(segment, 13, 1) or field_value(segment, 13, 12)
    if not number:
        area, local = field_value(segment, 13, 6), field_value(segment, 13, 7)
        number = f"({area}) {local}" if area and local else local
    return number or None


def _demographics(message: Any, pid: Any, control_id: str) -> Demographics:
    identifiers = _identifiers(pid, 3)
    if not identifiers:
        raise _refuse(
            "PID-3 must carry the patient's identifier", "101", message, control_id, ("PID", 1, 3)
        )
    own = next((i for i in identifiers if i[2] == "MR"), identifiers[0])
    family, given = field_value(pid, 5, 1), field_value(pid, 5, 2)
    if not family:
        raise _refuse("PID-5 must carry the family name", "101", message, control_id, ("PID", 1, 5))
    try:
        born = _birth_date(field_value(pid, 7)[:8])
    except ValueError as exc:
        raise _refuse(str(exc), "102", message, control_id, ("PID", 1, 7)) from None
    return Demographics(
        identifiers=tuple(i[0] for i in identifiers),
        system=own[1],
        value=own[0].value,
        family=family,
        given=given,
        birth_date=born,
        gender=_GENDERS.get(field_value(pid, 8).upper()),
        address=_address(pid),
        phone=_phone(pid),
    )


def read_adt(text: str) -> AdtMessage:
    """The patient (and, for A40, the merged patient) of one ADT message; MessageRejected
    (AR for an event medmesh does not take, AE-worthy MALFORMED otherwise) when unusable."""
    message = hl7.parse(_normalised(text))
    msh = message[0]
    control_id = field_value(msh, 10)
    event = field_value(msh, 9, 2)
    if event not in DEMOGRAPHIC_EVENTS and event not in MERGE_EVENTS:
        raise MessageRejected(
            RejectReason.UNKNOWN_FORMAT,
            f"ADT^{event if event.isalnum() and len(event) <= 3 else '?'} is not accepted: "
            "A01, A04, A08, A28, A31 (patient demographics), A40, A34 and A39 (merge) are",
            "200",
            message,
            control_id,
            ("MSH", 1, 9),
        )
    if not control_id or len(control_id) > MAX_CONTROL_ID or not control_id.isprintable():
        detail = f"MSH-10 message control id must be 1 to {MAX_CONTROL_ID} printable characters"
        raise MessageRejected(
            RejectReason.MALFORMED_BODY, detail, "101", message, control_id, ("MSH", 1, 10)
        )
    names = [str(s[0]) for s in message]
    if names.count("PID") != 1:
        raise _refuse("an ADT message carries one PID segment", "100", message, control_id, None)
    patient = _demographics(message, message[names.index("PID")], control_id)
    merged: tuple[PatientIdentifier, ...] = ()
    if event in MERGE_EVENTS:
        if "MRG" not in names:
            raise _refuse(f"{event} needs an MRG segment", "100", message, control_id, None)
        mrg = message[names.index("MRG")]
        merged = tuple(i[0] for i in _identifiers(mrg, 1) or _identifiers(mrg, 4))
        if not merged:
            raise _refuse(
                "MRG-1 must name the merged patient", "101", message, control_id, ("MRG", 1, 1)
            )
    return AdtMessage(message, control_id, event, patient, merged)
