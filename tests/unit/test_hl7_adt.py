"""Reading ADT messages (ingest/hl7_adt.py): a hospital's patient feed."""

from __future__ import annotations

from datetime import date

import pytest

from medmesh.domain.errors import RejectReason
from medmesh.ingest.hl7_adt import message_type, read_adt
from medmesh.ingest.hl7_oru import MessageRejected, PatientIdentifier


def adt(event: str, *segments: str) -> str:
    msh = f"MSH|^~\\&|ADT|HOSP|medmesh|RPM|20261124080000||ADT^{event}|C-1|P|2.5.1"
    return "\r".join([msh, *segments])


def test_the_record_identifier_is_the_mr_one_with_its_authority_as_system() -> None:
    message = read_adt(
        adt("A04", "PID|1||123-45^^^SSA^SS~H-9^^^HOSP^MR||Roe^Rick^J||19800101|M|||||555-0100")
    )
    patient = message.patient
    assert (patient.system, patient.value) == ("HOSP", "H-9")
    assert patient.identifiers == (
        PatientIdentifier("123-45", ("SSA",)),
        PatientIdentifier("H-9", ("HOSP",)),
    )
    assert (patient.family, patient.given, patient.gender) == ("Roe", "Rick", "male")
    assert patient.birth_date == date(1980, 1, 1)
    assert patient.phone == "555-0100" and patient.address is None


def test_without_an_authority_the_default_system_is_used() -> None:
    patient = read_adt(adt("A28", "PID|1||77||Poe^Pat")).patient
    assert (patient.system, patient.value) == ("urn:medmesh:mrn", "77")


def test_an_a40_names_the_merged_patient() -> None:
    message = read_adt(adt("A40", "PID|1||H-1^^^HOSP^MR||Roe^Rick", "MRG|H-2^^^HOSP^MR"))
    assert message.merged == (PatientIdentifier("H-2", ("HOSP",)),)


@pytest.mark.parametrize(
    ("event", "mrg"), [("A34", "MRG|H-2^^^HOSP^MR"), ("A39", "MRG||||H-2^^^HOSP^MR")]
)
def test_an_a34_or_a39_names_the_merged_patient_in_mrg_1_or_mrg_4(event: str, mrg: str) -> None:
    message = read_adt(adt(event, "PID|1||H-1^^^HOSP^MR||Roe^Rick", mrg))
    assert (message.event, message.merged) == (event, (PatientIdentifier("H-2", ("HOSP",)),))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (adt("A03", "PID|1||H-1||Roe^Rick"), RejectReason.UNKNOWN_FORMAT),
        (adt("A01", "PID|1||||Roe^Rick"), RejectReason.MALFORMED),
        (adt("A01", "PID|1||H-1||^Rick"), RejectReason.MALFORMED),
        (adt("A01", "PID|1||H-1||Roe^Rick||1980-01-01"), RejectReason.MALFORMED),
        (adt("A40", "PID|1||H-1||Roe^Rick"), RejectReason.MALFORMED),
        (adt("A39", "PID|1||H-1||Roe^Rick", "MRG|"), RejectReason.MALFORMED),
        (adt("A35", "PID|1||H-1||Roe^Rick", "MRG|H-2"), RejectReason.UNKNOWN_FORMAT),
        (adt("A01", "EVN|A01"), RejectReason.MALFORMED),
    ],
)
def test_unusable_messages_are_refused_with_a_reason(message: str, reason: RejectReason) -> None:
    with pytest.raises(MessageRejected) as refused:
        read_adt(message)
    assert refused.value.reason is reason
    assert refused.value.control_id == "C-1"


def test_the_message_type_is_read_without_judging_the_rest() -> None:
    assert message_type(adt("A08")) == ("ADT", "A08")
    assert message_type("not HL7") == ("", "")
