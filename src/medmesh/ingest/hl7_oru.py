"""HL7 v2 ORU^R01 observation messages from bedside monitors (IHE PCD-01) read into readings.
No I/O: the MLLP adapter (mllp.py) resolves devices and patients; hl7_ack.py builds the ACKs.

- Only ORU^R01 with a message control id (MSH-10) is read; anything else is rejected whole (AR).
- Patient: the PID-3 identifiers (CX id^^^assigning authority); no PID-3 means the patient the
  device is assigned to. One patient (PID) per message.
- Device: OBX-18 (equipment instance identifier, first component) of the OBX, else of its
  nearest enclosing OBX in the OBX-4 hierarchy (1.0.1.1 sits in 1.0.1, in 1.0, in 1), else
  MSH-3 (sending application, first component); it must be a registered serial number.
- Readings are numeric OBX (OBX-2 NM) with an MDC code in OBX-3 and unit in OBX-6 (domain/mdc.py),
  or, from a laboratory, a LOINC code (OBX-3.3 LN) with a UCUM unit, OBX-7 reference range and
  OBX-8 interpretation flag kept beside the result.
  Not readings, skipped: OBX without a value (device, channel headers), non-numeric OBX,
  results status X/D/W (not obtained, deleted, wrong), and mean blood pressure. A numeric OBX
  with an unknown code, a missing or unknown unit, a bad number or time is refused alone.
- Blood pressure: systolic and diastolic with the same OBX-4 parent and time make one reading;
  an unpaired one is refused.
- Time: OBX-14, else OBR-7 of the enclosing OBR, else MSH-7 (HL7 DTM); no offset means UTC.
- Message id: "{MSH-10}:{OBX-1}" (the systolic's for blood pressure; the OBX's position when
  some OBX-1 is empty, not a number or not unique), so a resent message is stored once.

Field values are read as sent: escape sequences are not decoded (codes, numbers, times and
identifiers do not carry them, and the library's unescape logs a malformed field's content).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import hl7  # type: ignore[import-untyped]

from medmesh.domain import mdc, vocabulary
from medmesh.domain.errors import InvalidReading, MedmeshError, RejectReason
from medmesh.domain.reading import RawReading
from medmesh.domain.ucum_syntax import is_ucum
from medmesh.ingest.incoming import Incoming
from medmesh.store.lab_results import LabFindings

MAX_CONTROL_ID = 100  # leaves room for ":{OBX-1}" within a 128-character message id
SKIPPED_STATUSES = frozenset({"X", "D", "W"})
# OBX-3.3 name of coding system (HL7 table 0396) for LOINC.
LOINC_SYSTEMS = frozenset({"LN", "LOINC"})
MDC_SYSTEMS = frozenset({"MDC", "MDC.IEEE"})
MAX_UNIT_LENGTH = 16  # observations.unit
_LOINC_CODE = re.compile(r"\d{1,7}-\d")
_COMPARATORS = frozenset({"", "=", "<", ">", "<=", ">="})
# OBX-11 (HL7 table 0085) of a laboratory result as FHIR Observation.status; X, D and W are
# skipped before this. R (not verified) and S (partial) are not final yet.
_LAB_STATUS = {
    "": "final",
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
}
_NOT_NUMERIC = (
    "OBX-2 must be NM or SN: text and coded laboratory results are not stored (docs/hl7.md)"
)
_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*")
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
# HL7 DTM to the minute at least (a reading's time), with optional seconds, fraction, offset.
_DTM = re.compile(r"\d{12}(\d{2}(\.\d{1,4})?)?([+-]\d{4})?")
# The OBX field an ERR points at when the pipeline (not the reader) refused the reading.
_FIELD_BY_REASON = {
    RejectReason.UNKNOWN_DEVICE: 18,
    RejectReason.UNIT_NOT_CONVERTIBLE: 6,
    RejectReason.FUTURE_TIMESTAMP: 14,
}


class MessageRejected(MedmeshError):
    """A message refused whole (AR). `source` is the parsed message when it parsed at all."""

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        hl7_error: str,
        source: Any = None,
        control_id: str = "",
        location: tuple[str, int, int] | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.hl7_error = hl7_error
        self.source = source
        self.control_id = control_id
        self.location = location
        self.sending_serial = _value(source[0], 3) if source is not None else ""  # MSH-3


@dataclass(frozen=True, slots=True)
class PatientIdentifier:
    """One PID-3 repetition: the identifier and, when given, its assigning authority's ids."""

    value: str
    authorities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservationItem:
    """One reading (or refusal) for the pipeline, with the OBX it came from (1-based) and, for a
    refusal at parse time, the OBX field at fault."""

    obx: int
    device_serial: str
    incoming: Incoming
    field: int = 0
    findings: LabFindings | None = None  # a laboratory result's OBX-7 and OBX-8

    def location(self, reason: RejectReason) -> tuple[str, int, int]:
        """Where an ERR segment points for this item refused for `reason`."""
        if reason is RejectReason.NO_PATIENT:
            return ("PID", 1, 3)
        return ("OBX", self.obx, self.field or _FIELD_BY_REASON.get(reason, 5))


@dataclass(frozen=True, slots=True)
class OruMessage:
    source: Any  # hl7.Message, for the ACK
    control_id: str
    patient_identifiers: tuple[PatientIdentifier, ...]
    items: tuple[ObservationItem, ...]


# --- reading fields ---------------------------------------------------------------------------


def _walk(node: Any, path: Sequence[int]) -> str:
    """The leaf at the 1-based `path` below `node` ("" when absent), without unescaping."""
    for index in path:
        if isinstance(node, str):
            return node if index == 1 else ""
        if index > len(node):
            return ""
        node = node[index - 1]
    return node if isinstance(node, str) else str(node)


def _value(segment: Any, field: int, component: int = 1, subcomponent: int = 1) -> str:
    """Field `field` (first repetition) of a segment; MSH fields are numbered as in HL7."""
    if field >= len(segment):
        return ""
    return _walk(segment[field], (1, component, subcomponent)).strip()


def _repetitions(segment: Any, field: int) -> list[Any]:
    return list(segment[field]) if field < len(segment) else []


# The field readers, shared with the ADT reader (hl7_adt.py).
field_value, walk, field_repetitions = _value, _walk, _repetitions


def _code_text(code: str) -> str:
    return code if _CODE.fullmatch(code) else "(not a code)"


def parse_time(text: str) -> datetime:
    """An HL7 DTM (YYYYMMDDHHMM[SS[.S]][+/-ZZZZ]) as an aware datetime; no offset means UTC."""
    if not _DTM.fullmatch(text):  # the library reads only a prefix: "2026-11-24" is 2026-01-01
        raise ValueError("not an HL7 DTM to the minute")
    moment: datetime = hl7.parse_datetime(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- the message ------------------------------------------------------------------------------


def read_oru(text: str) -> OruMessage:
    """The readings of one ORU^R01 message; MessageRejected when it cannot be read at all."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip()
    try:
        message = hl7.parse(text)
    except Exception:  # the parser raises many types on garbage; all of them mean "not HL7"
        raise MessageRejected(
            RejectReason.MALFORMED_BODY, "the message is not HL7 v2", "100"
        ) from None
    msh, names = message[0], [str(s[0]) for s in message]
    if names.count("MSH") != 1 or names[0] != "MSH":
        raise MessageRejected(
            RejectReason.MALFORMED_BODY, "one HL7 message per MLLP block", "100", source=message
        )
    control_id = _value(msh, 10)
    if (_value(msh, 9, 1), _value(msh, 9, 2)) != ("ORU", "R01"):
        detail = "accepted: ORU^R01 observations and ADT patient messages (docs/hl7.md)"
        raise MessageRejected(
            RejectReason.UNKNOWN_FORMAT, detail, "200", message, control_id, ("MSH", 1, 9)
        )
    if not control_id or len(control_id) > MAX_CONTROL_ID or not control_id.isprintable():
        detail = f"MSH-10 message control id must be 1 to {MAX_CONTROL_ID} printable characters"
        raise MessageRejected(
            RejectReason.MALFORMED_BODY, detail, "101", message, control_id, ("MSH", 1, 10)
        )
    if names.count("PID") > 1:
        detail = "one patient (PID) per message"
        raise MessageRejected(RejectReason.MALFORMED_BODY, detail, "100", message, control_id)
    # The parser splits the stripped text on \r: its segments are these, in order. The texts
    # are kept as dead-letter payloads (re-serialising the parsed segments costs more).
    texts = text.split("\r")
    if len(texts) != len(message):
        texts = [str(segment) for segment in message]
    pid = names.index("PID") if "PID" in names else None
    items = _ObservationReader(message, names, texts, control_id, pid).items()
    return OruMessage(message, control_id, _identifiers(message, pid), tuple(items))


def _identifiers(message: Any, pid: int | None) -> tuple[PatientIdentifier, ...]:
    found = []
    for repetition in _repetitions(message[pid], 3) if pid is not None else ():
        value = _walk(repetition, (1, 1)).strip()
        authority = (_walk(repetition, (4, 1)).strip(), _walk(repetition, (4, 2)).strip())
        if value:
            found.append(PatientIdentifier(value, tuple(a for a in authority if a)))
    return tuple(found)


def _has_value(segment: Any) -> bool:
    """OBX-5 holds something (an SN such as `^5` has an empty first component)."""
    return len(segment) > 5 and bool(str(segment[5]).strip("^ "))


def _structured_number(segment: Any) -> tuple[str | None, str]:
    """An SN value (comparator^num1^separator^num2) that is one number, with or without a
    comparator; a range or ratio (`^1^-^5`, `^1^:^128`) is refused."""
    comparator, number = _value(segment, 5, 1), _value(segment, 5, 2)
    if _value(segment, 5, 3) or _value(segment, 5, 4):
        raise _Refused(5, RejectReason.MALFORMED, "OBX-5 SN ranges and ratios are not stored")
    if comparator not in _COMPARATORS:
        raise _Refused(5, RejectReason.MALFORMED, "OBX-5 SN comparator must be <, >, <=, >= or =")
    return (comparator if comparator not in ("", "=") else None), number


def _findings(segment: Any) -> LabFindings:
    """OBX-3 text, OBX-7 reference range, OBX-8 flag and OBX-11 status of a laboratory result."""
    status = _LAB_STATUS.get(_value(segment, 11).upper())
    if status is None:
        raise _Refused(11, RejectReason.MALFORMED, "OBX-11 result status must be F, C, P, R or S")
    reference, flag, display = _value(segment, 7), _value(segment, 8), _value(segment, 3, 2)
    return LabFindings(reference or None, flag or None, display or None, status)


class _Refused(InvalidReading):
    """An OBX refused at parse time, with the OBX field at fault (for ERR-2)."""

    def __init__(self, field: int, reason: RejectReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.field = field


@dataclass(frozen=True, slots=True)
class _Obx:
    """A numeric OBX, read; blood-pressure parts wait here for their partner."""

    number: int
    serial: str
    message_id: str
    text: str
    metric: mdc.MdcMetric | None = None
    value: float = 0.0
    unit: str = ""
    effective: datetime | None = None
    findings: LabFindings | None = None
    laboratory_test: bool = False  # a LOINC code outside the vocabulary


class _ObservationReader:
    """Walks the segments in order, keeping the enclosing OBR and the OBX-4 device hierarchy."""

    def __init__(
        self, message: Any, names: list[str], texts: list[str], control_id: str, pid: int | None
    ) -> None:
        self._message, self._names, self._texts = message, names, texts
        self._control_id, msh = control_id, message[0]
        self._sender, self._time = _value(msh, 3), _value(msh, 7)
        self._header = texts[0] + ("\r" + texts[pid] if pid is not None else "")
        set_ids = [_value(s, 1) for s, name in zip(message, names, strict=True) if name == "OBX"]
        # OBX-1 is a sequence id (SI, digits); anything else, or a repeat, and positions are used.
        usable = all(i.isdigit() and len(i) <= 10 for i in set_ids)
        self._use_set_ids = usable and len(set(set_ids)) == len(set_ids)
        self._serials: dict[str, str] = {}  # OBX-4 sub-id -> OBX-18
        self._found: list[ObservationItem] = []
        self._parts: dict[tuple[str, str, datetime | None], dict[str, _Obx]] = {}

    def items(self) -> list[ObservationItem]:
        obr_time, number = "", 0
        for segment, name, text in zip(self._message, self._names, self._texts, strict=True):
            if name == "OBR":
                obr_time = _value(segment, 7)
            elif name == "OBX":
                number += 1
                self._read(segment, text, number, obr_time)
        for parts in self._parts.values():
            self._pair(parts)
        return sorted(self._found, key=lambda item: item.obx)

    def _serial(self, segment: Any) -> str:
        sub_id, own = _value(segment, 4), _value(segment, 18)
        if own:
            self._serials[sub_id] = own
            return own
        parts = sub_id.split(".")
        inherited = (
            self._serials.get(".".join(parts[:end])) for end in range(len(parts) - 1, 0, -1)
        )
        return next((s for s in inherited if s), self._sender)

    def _add(
        self, obx: _Obx, *texts: str, raw: RawReading | None = None, refused: _Refused | None = None
    ) -> None:
        incoming = Incoming("\r".join((self._header, *texts)), obx.message_id, raw, refused)
        field = refused.field if refused else 0
        item = ObservationItem(obx.number, obx.serial, incoming, field, obx.findings)
        self._found.append(item)

    def _read(self, segment: Any, text: str, number: int, obr_time: str) -> None:
        serial = self._serial(segment)
        code, reference_id = _value(segment, 3, 1), _value(segment, 3, 2)
        laboratory = _value(segment, 3, 3).upper() in LOINC_SYSTEMS
        if (
            not _has_value(segment)
            or _value(segment, 11).upper() in SKIPPED_STATUSES
            or (_value(segment, 2) not in ("NM", "") and not laboratory)
            or mdc.is_not_stored(code, reference_id)
        ):
            return
        set_id = _value(segment, 1) if self._use_set_ids else str(number)
        obx = _Obx(number, serial, f"{self._control_id}:{set_id}", text)
        try:
            if laboratory and vocabulary.measure_by_code(code) is None:
                obx = self._laboratory_test(segment, obx, obr_time)
            else:
                obx = self._numeric(segment, obx, obr_time)
        except _Refused as refused:
            return self._add(obx, obx.text, refused=refused)
        assert obx.metric is not None and obx.effective is not None
        if obx.metric.component is None:
            raw = RawReading(
                obx.message_id,
                obx.metric.measure,
                obx.effective,
                obx.value,
                obx.unit,
                laboratory_test=obx.laboratory_test,
            )
            return self._add(obx, obx.text, raw=raw)
        group = self._parts.setdefault(
            (serial, _value(segment, 4).rpartition(".")[0], obx.effective), {}
        )
        if obx.metric.component in group:
            detail = f"a second {obx.metric.component} pressure in the group"
            return self._add(obx, obx.text, refused=_Refused(4, RejectReason.MALFORMED, detail))
        group[obx.metric.component] = obx
        return None

    def _numeric(self, segment: Any, obx: _Obx, obr_time: str) -> _Obx:
        """The OBX's metric, value, unit and time, or _Refused naming the field at fault."""
        if not _value(segment, 2):
            raise _Refused(2, RejectReason.MALFORMED, "OBX-2 value type is missing")
        code, reference_id = _value(segment, 3, 1), _value(segment, 3, 2)
        loinc = _value(segment, 3, 3).upper() in LOINC_SYSTEMS
        # A laboratory codes its results in LOINC: the pipeline knows the code or refuses it.
        metric = (
            mdc.MdcMetric(code, reference_id, code) if loinc else mdc.metric(code, reference_id)
        )
        if metric is None:
            system = _value(segment, 3, 3)
            if system and system.upper() not in MDC_SYSTEMS:
                detail = (
                    f"OBX-3 coding system {_code_text(system)} is neither LOINC (LN) nor MDC: "
                    "local codes are not stored"
                )
            else:
                shown = _code_text(code or reference_id)
                detail = f"OBX-3 code {shown} is not a measurement medmesh stores"
            raise _Refused(3, RejectReason.UNKNOWN_CODE, detail)
        if loinc and _value(segment, 2) not in ("NM", ""):
            raise _Refused(2, RejectReason.MALFORMED, _NOT_NUMERIC)
        raw_value = _value(segment, 5)
        if not _NUMBER.fullmatch(raw_value):
            raise _Refused(5, RejectReason.MALFORMED, "OBX-5 is not an HL7 NM number")
        unit_code, unit_text = _value(segment, 6, 1), _value(segment, 6, 2)
        if not unit_code and not unit_text:
            raise _Refused(6, RejectReason.MALFORMED, "OBX-6 units are missing")
        ucum = mdc.ucum(unit_code, unit_text, _value(segment, 6, 3))
        if ucum is None and loinc:
            ucum = unit_code or unit_text  # laboratories send UCUM mostly uncoded: checked later
        if ucum is None:
            detail = "OBX-6 is not a known MDC or UCUM unit"  # the field, not the unit sent
            raise _Refused(6, RejectReason.UNIT_NOT_CONVERTIBLE, detail)
        effective = self._effective(segment, obr_time)
        findings = _findings(segment) if loinc else None
        return replace(
            obx,
            metric=metric,
            value=float(raw_value),
            unit=ucum,
            effective=effective,
            findings=findings,
        )

    def _laboratory_test(self, segment: Any, obx: _Obx, obr_time: str) -> _Obx:
        """A LOINC-coded result outside medmesh's vocabulary: stored in the unit the laboratory
        reports, which must be UCUM; a number (NM) or a number with a comparator (SN `<^5`)."""
        code = _value(segment, 3, 1)
        if not _LOINC_CODE.fullmatch(code):
            raise _Refused(3, RejectReason.UNKNOWN_CODE, "OBX-3 is not a LOINC code (nnnnn-n)")
        value_type = _value(segment, 2)
        if value_type in ("NM", ""):
            if not value_type:
                raise _Refused(2, RejectReason.MALFORMED, "OBX-2 value type is missing")
            comparator, raw_value = None, _value(segment, 5)
        elif value_type == "SN":
            comparator, raw_value = _structured_number(segment)
        else:
            raise _Refused(2, RejectReason.MALFORMED, _NOT_NUMERIC)
        if not _NUMBER.fullmatch(raw_value):
            raise _Refused(5, RejectReason.MALFORMED, "OBX-5 is not an HL7 NM number")
        unit = _value(segment, 6, 1) or _value(segment, 6, 2) or "1"  # none: a pure number
        if not is_ucum(unit) or len(unit) > MAX_UNIT_LENGTH:
            detail = f"OBX-6 is not a UCUM unit of at most {MAX_UNIT_LENGTH} characters"
            raise _Refused(6, RejectReason.UNIT_NOT_CONVERTIBLE, detail)
        effective = self._effective(segment, obr_time)
        findings = replace(_findings(segment), comparator=comparator)
        metric = mdc.MdcMetric(code, _value(segment, 3, 2), code)
        number = float(raw_value)
        return replace(
            obx,
            metric=metric,
            value=number,
            unit=unit,
            effective=effective,
            findings=findings,
            laboratory_test=True,
        )

    def _effective(self, segment: Any, obr_time: str) -> datetime:
        times = (("OBX-14", _value(segment, 14)), ("OBR-7", obr_time), ("MSH-7", self._time))
        name, text = next(((n, t) for n, t in times if t), times[-1])
        try:
            return parse_time(text)
        except ValueError:
            raise _Refused(14, RejectReason.MALFORMED, f"{name} is not an HL7 date/time") from None

    def _pair(self, parts: dict[str, _Obx]) -> None:
        systolic, diastolic = parts.get("systolic"), parts.get("diastolic")
        if systolic is None or diastolic is None:
            for name, part in parts.items():
                other = "diastolic" if name == "systolic" else "systolic"
                detail = f"{name} pressure without a {other} of the same group and time"
                self._add(part, part.text, refused=_Refused(3, RejectReason.MALFORMED, detail))
            return
        texts = (systolic.text, diastolic.text)
        if systolic.unit != diastolic.unit:
            detail = "systolic and diastolic pressure have different units"
            return self._add(systolic, *texts, refused=_Refused(6, RejectReason.MALFORMED, detail))
        assert systolic.effective is not None
        value = {"systolic": systolic.value, "diastolic": diastolic.value}
        raw = RawReading(
            systolic.message_id, "blood-pressure", systolic.effective, value, systolic.unit
        )
        self._add(systolic, *texts, raw=raw)
