"""Reading IHE PCD-01 ORU^R01 messages into readings, and building the ACKs that answer them."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain import mdc
from medmesh.domain.errors import RejectReason
from medmesh.ingest.hl7_ack import AckCode, AckError, build_ack
from medmesh.ingest.hl7_oru import (
    MessageRejected,
    ObservationItem,
    PatientIdentifier,
    parse_time,
    read_oru,
)

MSH = (
    "MSH|^~\\&|MONITOR-7^0123456789ABCDEF^EUI-64|ICU|medmesh|HOSP|20261124080500+0000||"
    "ORU^R01^ORU_R01|{control_id}|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^"
    "1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
)
PID = "PID|||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane^^^^^L"
OBR = "OBR|1|{control_id}^MONITOR-7|{control_id}^MONITOR-7|182777000^monitoring^SCT|||{time}"
T = "20261124080000+0000"
AT = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)

VITALS = [
    "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||X|||||||MONITOR-7^EUI-64",
    "OBX|2||69642^MDC_DEV_ANALY_SAT_O2_VMD^MDC|1.1|||||||X",
    f"OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||{T}",
    f"OBX|4|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC"
    f"|||||R|||{T}",
    "OBX|5|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|73|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R",
    "OBX|6||150020^MDC_PRESS_BLD_NONINV^MDC|1.3.1|||||||X",
    "OBX|7|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.3.1.1|128|266016^MDC_DIM_MMHG^MDC|||||R"
    "|||20261124075800+0000",
    "OBX|8|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.3.1.2|82|266016^MDC_DIM_MMHG^MDC|||||R"
    "|||20261124075800+0000",
    "OBX|9|NM|150023^MDC_PRESS_BLD_NONINV_MEAN^MDC|1.3.1.3|97|266016^MDC_DIM_MMHG^MDC|||||R"
    "|||20261124075800+0000",
    "OBX|10|NM|150364^MDC_TEMP_BODY^MDC|1.4.1.1|36.9|268192^MDC_DIM_DEGC^MDC|||||R",
    "OBX|11|NM|151562^MDC_RESP_RATE^MDC|1.5.1.1|16|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R",
]


def message(
    *obx: str, control_id: str = "MSG-0001", pid: str | None = PID, obr_time: str = T
) -> str:
    segments = [MSH.format(control_id=control_id)]
    segments += [pid] if pid is not None else []
    segments += ["PV1||I|ICU^1^1", OBR.format(control_id=control_id, time=obr_time), *obx]
    return "\r".join(segments) + "\r"


def readings(items: tuple[ObservationItem, ...]) -> list[tuple[int, str, object, str]]:
    found = []
    for item in items:
        assert item.incoming.error is None, item.incoming.error
        raw = item.incoming.reading
        assert raw is not None
        found.append((item.obx, raw.measure, raw.value, raw.unit))
    return found


def refusals(items: tuple[ObservationItem, ...]) -> list[tuple[int, RejectReason, int]]:
    return [(i.obx, i.incoming.error.reason, i.field) for i in items if i.incoming.error]


def test_pcd01_vitals_become_readings_in_our_measures_and_ucum_units() -> None:
    oru = read_oru(message(*VITALS))
    assert oru.control_id == "MSG-0001"
    assert readings(oru.items) == [
        (3, "oxygen-saturation", 97.0, "%"),
        (4, "heart-rate", 72.0, "/min"),
        (5, "heart-rate", 73.0, "/min"),
        (7, "blood-pressure", {"systolic": 128.0, "diastolic": 82.0}, "mm[Hg]"),
        (10, "body-temperature", 36.9, "Cel"),
        (11, "respiratory-rate", 16.0, "/min"),
    ]
    assert {i.device_serial for i in oru.items} == {"MONITOR-7"}


def test_message_ids_are_the_control_id_and_obx_set_id_with_the_systolics_for_bp() -> None:
    oru = read_oru(message(*VITALS, control_id="C-42"))
    assert [i.incoming.message_id for i in oru.items] == [
        "C-42:3",
        "C-42:4",
        "C-42:5",
        "C-42:7",
        "C-42:10",
        "C-42:11",
    ]


def test_position_replaces_obx1_when_it_is_empty_or_repeated() -> None:
    obx = VITALS[4]
    repeated = read_oru(message(obx, obx.replace("|73|", "|74|")))
    assert [i.incoming.message_id for i in repeated.items] == ["MSG-0001:1", "MSG-0001:2"]
    empty = read_oru(message(obx.replace("OBX|5|", "OBX||")))
    assert [i.incoming.message_id for i in empty.items] == ["MSG-0001:1"]
    text = read_oru(message(obx.replace("OBX|5|", "OBX|" + "x" * 200 + "|")))
    assert [i.incoming.message_id for i in text.items] == ["MSG-0001:1"]


def test_time_is_obx14_else_obr7_else_msh7_and_without_offset_utc() -> None:
    hr = "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|73|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"
    own = read_oru(message(hr + "|||202611240930-0500"))
    obr = read_oru(message(hr, obr_time="20261124071500"))
    msh = read_oru(message(hr, obr_time=""))
    times = [m.items[0].incoming.reading.effective for m in (own, obr, msh)]  # type: ignore[union-attr]
    assert times == [
        datetime(2026, 11, 24, 14, 30, tzinfo=UTC),
        datetime(2026, 11, 24, 7, 15, tzinfo=UTC),
        datetime(2026, 11, 24, 8, 5, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("202611240800", datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),
        ("20261124080030.25", datetime(2026, 11, 24, 8, 0, 30, 250000, tzinfo=UTC)),
        ("20261124100000+0200", datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),
    ],
)
def test_hl7_times_are_read_to_aware_utc(text: str, expected: datetime) -> None:
    moment = parse_time(text)
    assert moment == expected
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "2026", "2026-11-24", "20261124", "202613240800", "now"])
def test_times_that_are_not_hl7_dtm_to_the_minute_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_headers_unavailable_values_means_and_text_are_not_readings() -> None:
    oru = read_oru(
        message(
            VITALS[0],
            VITALS[1],
            VITALS[8],  # mean pressure alone: known, not stored
            "OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|8388607|262688^MDC_DIM_PERCENT^MDC"
            "|||||X",
            "OBX|5|ST|184326^MDC_ECG_STAT_RHY^MDC|1.2.1.9|Sinus rhythm||||||R",
        )
    )
    assert oru.items == ()


def test_unknown_mdc_code_is_refused_alone_and_named() -> None:
    made_up = "OBX|12|NM|999999^MDC_MADE_UP^MDC|1.9.1.1|5|262688^MDC_DIM_PERCENT^MDC|||||R"
    oru = read_oru(message(*VITALS, made_up))
    assert refusals(oru.items) == [(12, RejectReason.UNKNOWN_CODE, 3)]
    refused = next(i for i in oru.items if i.incoming.error)
    assert refused.incoming.error is not None
    assert "999999" in refused.incoming.error.message
    assert refused.incoming.message_id == "MSG-0001:12"
    assert made_up in refused.incoming.payload and PID in refused.incoming.payload
    assert len([i for i in oru.items if i.incoming.reading]) == 6


def test_a_code_that_is_not_a_code_is_not_echoed() -> None:
    oru = read_oru(message("OBX|1|NM|Doe Jane 1970^x^MDC|1|5|262688^MDC_DIM_PERCENT^MDC"))
    (item,) = oru.items
    assert item.incoming.error is not None
    assert "Doe" not in item.incoming.error.message


HR = "147842^MDC_ECG_HEART_RATE^MDC"
BPM = "264864^MDC_DIM_BEAT_PER_MIN^MDC"


@pytest.mark.parametrize(
    ("obx", "reason", "field"),
    [
        (f"OBX|1||{HR}|1|73|{BPM}", "malformed", 2),
        (f"OBX|1|NM|{HR}|1|7e1|{BPM}", "malformed", 5),
        (f"OBX|1|NM|{HR}|1|1_000|{BPM}", "malformed", 5),
        (f"OBX|1|NM|{HR}|1|73|", "malformed", 6),
        (f"OBX|1|NM|{HR}|1|73|999^MDC_DIM_WHATEVER^MDC", "unit-not-convertible", 6),
        (f"OBX|1|NM|{HR}|1|73|{BPM}|||||R|||2026-11-24", "malformed", 14),
    ],
)
def test_a_bad_obx_is_refused_naming_the_field(obx: str, reason: str, field: int) -> None:
    assert refusals(read_oru(message(obx)).items) == [(1, RejectReason(reason), field)]


def test_units_may_be_mdc_codes_reference_ids_or_ucum_coded() -> None:
    base = "OBX|{n}|NM|150364^MDC_TEMP_BODY^MDC|1.4.1.{n}|{v}|{unit}|||||R"
    oru = read_oru(
        message(
            base.format(n=1, v="98.6", unit="266560^MDC_DIM_FAHR^MDC"),
            base.format(n=2, v="37.0", unit="^MDC_DIM_DEGC^MDC"),
            base.format(n=3, v="37.1", unit="Cel^Cel^UCUM"),
        )
    )
    assert [(r[2], r[3]) for r in readings(oru.items)] == [
        (98.6, "[degF]"),
        (37.0, "Cel"),
        (37.1, "Cel"),
    ]


def test_blood_pressure_pairs_by_group_and_time_and_an_unpaired_part_is_refused() -> None:
    obx = "OBX|{n}|NM|{code}|{g}|{v}|266016^MDC_DIM_MMHG^MDC|||||R|||{t}"
    sys_ = obx.replace("{code}", "150021^MDC_PRESS_BLD_NONINV_SYS^MDC")
    dia = obx.replace("{code}", "150022^MDC_PRESS_BLD_NONINV_DIA^MDC")
    oru = read_oru(
        message(
            sys_.format(n=1, g="1.3.1.1", v=120, t="202611240800"),
            sys_.format(n=2, g="1.3.1.1", v=130, t="202611240810"),
            dia.format(n=3, g="1.3.1.2", v=80, t="202611240800"),
            dia.format(n=4, g="1.3.1.2", v=85, t="202611240810"),
            sys_.format(n=5, g="1.3.2.1", v=140, t="202611240800"),
        )
    )
    valid = [i for i in oru.items if i.incoming.reading]
    assert [(i.incoming.message_id, i.incoming.reading.value) for i in valid] == [  # type: ignore[union-attr]
        ("MSG-0001:1", {"systolic": 120.0, "diastolic": 80.0}),
        ("MSG-0001:2", {"systolic": 130.0, "diastolic": 85.0}),
    ]
    assert refusals(oru.items) == [(5, RejectReason.MALFORMED, 3)]


def test_device_serial_is_obx18_inherited_down_the_obx4_tree_else_msh3() -> None:
    oru = read_oru(
        message(
            "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||X|||||||BOX-1^EUI-64",
            "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|73|264864^MDC_DIM_BEAT_PER_MIN^MDC",
            "OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|2.2.1.1|74|264864^MDC_DIM_BEAT_PER_MIN^MDC",
            "OBX|4|NM|147842^MDC_ECG_HEART_RATE^MDC|2.2.1.2|75|264864^MDC_DIM_BEAT_PER_MIN^MDC"
            "|||||R|||||||CUFF-9^EUI-64",
        )
    )
    assert [(i.obx, i.device_serial) for i in oru.items] == [
        (2, "BOX-1"),
        (3, "MONITOR-7"),
        (4, "CUFF-9"),
    ]


def test_patient_identifiers_come_from_every_pid3_repetition() -> None:
    pid = "PID|||MRN-1^^^urn:medmesh:mrn^MR~4711^^^HOSP&1.2.3.4&ISO^PI~^^^X~ABC||Doe^Jane"
    oru = read_oru(message(pid=pid))
    assert oru.patient_identifiers == (
        PatientIdentifier("MRN-1", ("urn:medmesh:mrn",)),
        PatientIdentifier("4711", ("HOSP", "1.2.3.4")),
        PatientIdentifier("ABC"),
    )
    assert read_oru(message(pid=None)).patient_identifiers == ()


def test_line_feeds_between_segments_are_read_as_carriage_returns() -> None:
    oru = read_oru(message(*VITALS).replace("\r", "\r\n"))
    assert len(oru.items) == 6


@pytest.mark.parametrize(
    ("text", "reason", "hl7_error", "location"),
    [
        ("hello", "malformed-body", "100", None),
        ("", "malformed-body", "100", None),
        ("MSH|^~\\&|A|B|||2026||ADT^A01|X1|P|2.6\rPID|||1", "unknown-format", "200", ("MSH", 1, 9)),
        ("MSH|^~\\&|A|B|||2026||ORU^R01||P|2.6\rOBR|1", "malformed-body", "101", ("MSH", 1, 10)),
        (message(*VITALS) + message(*VITALS), "malformed-body", "100", None),
        (message(pid=PID + "\r" + PID), "malformed-body", "100", None),
    ],
)
def test_messages_that_cannot_be_read_are_rejected_whole(
    text: str, reason: str, hl7_error: str, location: tuple[str, int, int] | None
) -> None:
    with pytest.raises(MessageRejected) as caught:
        read_oru(text)
    assert (caught.value.reason, caught.value.hl7_error) == (RejectReason(reason), hl7_error)
    assert caught.value.location == location


def test_rejection_keeps_the_control_id_and_sending_serial_when_the_header_is_readable() -> None:
    with pytest.raises(MessageRejected) as caught:
        read_oru("MSH|^~\\&|MONITOR-7|B|||20261124||ADT^A01|X1|P|2.6")
    assert (caught.value.control_id, caught.value.sending_serial) == ("X1", "MONITOR-7")


@given(st.text(max_size=300))
def test_any_text_is_read_or_rejected_never_crashes(text: str) -> None:
    with contextlib.suppress(MessageRejected):
        read_oru(text)


@given(st.lists(st.text(alphabet="0123456789.^|&~\\-+ABCXNM", max_size=20), max_size=20))
def test_any_obx_fields_are_read_or_refused_never_crash(fields: list[str]) -> None:
    oru = read_oru(message("OBX|" + "|".join(fields)))
    assert all((i.incoming.reading is None) != (i.incoming.error is None) for i in oru.items)


# --- ACKs -------------------------------------------------------------------------------------


def test_aa_echoes_msh10_in_msa2_and_swaps_sender_and_receiver() -> None:
    oru = read_oru(message(*VITALS, control_id="MSG-77"))
    ack = hl7.parse(build_ack(oru.source, AckCode.ACCEPT, "6 observations accepted"))
    assert str(ack.segment("MSH")(9)) == "ACK^R01^ACK"
    assert str(ack.segment("MSH")(5)) == "MONITOR-7^0123456789ABCDEF^EUI-64"
    msa = ack.segment("MSA")
    assert (str(msa(1)), str(msa(2)), str(msa(3))) == ("AA", "MSG-77", "6 observations accepted")
    assert len(ack) == 2


def test_ae_carries_one_err_per_error_with_location_hl7_code_and_reason() -> None:
    oru = read_oru(message(*VITALS))
    errors = [
        AckError(RejectReason.UNKNOWN_CODE, "OBX-3 code 999999 is unknown", ("OBX", 12, 3)),
        AckError(RejectReason.NO_PATIENT, "no patient matches", ("PID", 1, 3)),
    ]
    ack = hl7.parse(build_ack(oru.source, AckCode.ERROR, "2 of 8 refused", errors))
    assert str(ack.segment("MSA")(1)) == "AE"
    first, second = ack.segments("ERR")
    assert str(first(2)) == "OBX^12^3"
    assert str(first(3)) == "103^Table value not found^HL70357"
    assert str(first(4)) == "E"
    assert str(first(5)) == "unknown-code^^99MEDMESH"
    assert str(first(8)) == "OBX-3 code 999999 is unknown"
    assert (str(second(2)), str(second(3)(1)(1))) == ("PID^1^3", "204")


def test_ack_texts_are_escaped_so_they_cannot_break_the_message() -> None:
    oru = read_oru(message(*VITALS))
    text = "range 20–300 | a^b & c ~ d \\ é"
    raw = build_ack(oru.source, AckCode.ERROR, text, [AckError(RejectReason.MALFORMED, text)])
    assert raw.isascii()
    ack = hl7.parse(raw)
    shown = "range 20-300 | a^b & c ~ d \\ ?"
    assert ack.unescape(str(ack.segment("MSA")(3))) == shown
    assert ack.unescape(str(ack.segment("ERR")(8))) == shown


def test_ar_for_unreadable_input_has_its_own_header_and_an_empty_msa2() -> None:
    ack = hl7.parse(build_ack(None, AckCode.REJECT, "the message is not HL7 v2"))
    assert str(ack.segment("MSH")(9)) == "ACK"
    assert [str(f) for f in ack.segment("MSA")[1:4]] == ["AR", "", "the message is not HL7 v2"]


def test_ack_for_a_header_too_short_to_echo_still_names_the_control_id() -> None:
    source = hl7.parse("MSH|^~\\&|A|B|||20261124||ORU^R01|SHORT-1")
    ack = hl7.parse(build_ack(source, AckCode.REJECT, "x", control_id="SHORT-1"))
    assert [str(f) for f in ack.segment("MSA")[1:3]] == ["AR", "SHORT-1"]


# --- the MDC tables ---------------------------------------------------------------------------


def test_mdc_codes_resolve_by_number_or_reference_id() -> None:
    by_number, by_name = mdc.metric("150456"), mdc.metric("", "MDC_PULS_OXIM_SAT_O2")
    assert by_number is by_name is not None
    assert by_number.measure == "oxygen-saturation"
    assert mdc.metric("150022") == mdc.MdcMetric(
        "150022", "MDC_PRESS_BLD_NONINV_DIA", "blood-pressure", "diastolic"
    )
    assert mdc.metric("999999") is None
    assert mdc.is_not_stored("150023") and not mdc.is_not_stored("150021")
    assert mdc.ucum("264928") == "/min" and mdc.ucum("x", "MDC_DIM_MMHG") == "mm[Hg]"
    assert mdc.ucum("kPa", "", "UCUM") == "kPa" and mdc.ucum("kPa") is None


def test_every_mdc_unit_code_is_the_dimension_partition_plus_its_term_code() -> None:
    terms = {
        "MDC_DIM_PERCENT": 544,
        "MDC_DIM_BEAT_PER_MIN": 2720,
        "MDC_DIM_RESP_PER_MIN": 2784,
        "MDC_DIM_MMHG": 3872,
        "MDC_DIM_FAHR": 4416,
        "MDC_DIM_DEGC": 6048,
    }
    assert {u.reference_id: int(u.code) - 4 * 65536 for u in mdc.UNITS} == terms


def test_every_mapped_measure_exists_in_the_vocabulary() -> None:
    from medmesh.domain.vocabulary import measure_by_key

    for metric in mdc.METRICS:
        measure = measure_by_key(metric.measure)
        assert measure is not None
        assert metric.component is None or measure.component(metric.component) is not None


def test_an_offset_time_stays_the_same_instant() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert parse_time("202611240300-0500") == datetime(2026, 11, 24, 3, 0, tzinfo=eastern)
