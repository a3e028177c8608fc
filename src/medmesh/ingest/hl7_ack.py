"""HL7 v2 acknowledgements (original mode) for the messages the MLLP adapter receives:
MSA-1 AA/AE/AR, MSA-2 the original MSH-10, MSA-3 a short text, and one ERR per error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import hl7  # type: ignore[import-untyped]

from medmesh.domain.errors import RejectReason

# HL7 table 0357, message error condition codes (http://terminology.hl7.org/CodeSystem/v2-0357).
_HL7_ERRORS = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}
_HL7_ERROR_BY_REASON = {
    RejectReason.MALFORMED: "102",
    RejectReason.UNKNOWN_CODE: "103",
    RejectReason.UNIT_NOT_CONVERTIBLE: "103",
    RejectReason.NO_PATIENT: "204",
    RejectReason.BEFORE_REASSIGNMENT: "204",
    RejectReason.UNKNOWN_DEVICE: "204",
    RejectReason.UNKNOWN_FORMAT: "200",
    # No table 0357 code says "out of range"; a value the field cannot take is closest to a
    # data type error, and far better than 207 (which reads as our own fault).
    RejectReason.IMPLAUSIBLE_VALUE: "102",
    RejectReason.FUTURE_TIMESTAMP: "102",
}


class AckCode(StrEnum):
    """MSA-1 (HL7 table 0008), original acknowledgment mode."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: what was wrong, and where (segment, occurrence, field)."""

    reason: RejectReason
    detail: str
    location: tuple[str, int, int] | None = None
    hl7_error: str = ""


def hl7_error_for(reason: RejectReason) -> str:
    """The HL7 table 0357 code for a medmesh reject reason."""
    return _HL7_ERROR_BY_REASON.get(reason, "207")


def _text(ack: Any, text: str) -> str:
    """ACK text as HL7-escaped ASCII: the library's escape writes non-Latin-1 characters as
    \\Xdddd\\, which readers take for two bytes, so ours are made ASCII first."""
    plain = text.replace("\u2013", "-").encode("ascii", "replace").decode("ascii")
    return str(ack.escape(plain))


def _bare_ack(control_id: str, application: str) -> Any:
    """An ACK header for input whose own MSH could not be echoed (create_ack needs a full one)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    ack = hl7.parse(
        f"MSH|^~\\&|{application}||||{now}||ACK|{hl7.generate_message_control_id()}|P|2.6"
    )
    msa = ack.create_segment([ack.create_field(["MSA"])])
    msa.assign_field(_text(ack, control_id), 2)
    ack.append(msa)
    return ack


def build_ack(
    source: Any,
    code: AckCode,
    text: str,
    errors: Sequence[AckError] = (),
    *,
    control_id: str = "",
    application: str = "medmesh",
) -> str:
    """The ACK message: MSA-1 `code`, MSA-2 the original MSH-10, MSA-3 `text`, one ERR each.

    Texts must not carry health data; they are HL7-escaped here.
    """
    ack = None
    if source is not None:
        try:
            ack = source.create_ack(code.value, application=application)
        except (IndexError, TypeError, KeyError, ValueError):
            ack = None  # an MSH too short or odd to echo
    if ack is None:
        ack = _bare_ack(control_id, application)
    msa = ack.segment("MSA")
    msa.assign_field(code.value, 1)
    msa.assign_field(_text(ack, text), 3)
    for error in errors:
        hl7_error = error.hl7_error or hl7_error_for(error.reason)
        err = ack.create_segment([ack.create_field(["ERR"])])
        if error.location is not None:
            for position, part in enumerate(error.location, start=1):
                err.assign_field(str(part), 2, 1, position)
        err.assign_field(hl7_error, 3, 1, 1)
        err.assign_field(_HL7_ERRORS.get(hl7_error, ""), 3, 1, 2)
        err.assign_field("HL70357", 3, 1, 3)
        err.assign_field("E", 4)
        err.assign_field(error.reason.value, 5, 1, 1)
        err.assign_field("99MEDMESH", 5, 1, 3)
        err.assign_field(_text(ack, error.detail), 8)
        ack.append(err)
    return str(ack)
