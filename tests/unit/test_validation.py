"""Why a reading is refused: each RejectReason from the input that should cause it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import MeasuredValue, RawReading
from medmesh.domain.validation import check_effective_time, resolve_measure, validate_values
from medmesh.domain.vocabulary import MEASURES, Measure, Quantity, measure_by_key
from medmesh.ingest.native import MAX_MESSAGE_ID_LENGTH, MalformedBody, parse_body, parse_item

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
BP = measure_by_key("blood-pressure")
assert BP is not None

SINGLE_MEASURES = [m for m in MEASURES if m.quantity is not None]


def _raw(measure: str, value: Any, unit: str, at: datetime = NOW) -> RawReading:
    return RawReading("m-1", measure, at, value, unit)


def _validate(measure: str, value: Any, unit: str) -> tuple[MeasuredValue, ...]:
    return validate_values(resolve_measure(measure), _raw(measure, value, unit))


def _reason(call: Any, *args: Any) -> InvalidReading:
    with pytest.raises(InvalidReading) as caught:
        call(*args)
    return caught.value


def _item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "m-1",
        "type": "heart-rate",
        "time": "2026-11-25T08:00:00Z",
        "value": 72,
        "unit": "/min",
    }
    for key, value in changes.items():
        if value is _MISSING:
            del item[key]
        else:
            item[key] = value
    return item


_MISSING = object()


# --- unknown code -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["blood-alcohol", "12345-6", "Heart-Rate", "8480-6", " "])
def test_an_unknown_measure_or_code_is_refused_as_unknown_code(name: str) -> None:
    assert _reason(resolve_measure, name).reason is RejectReason.UNKNOWN_CODE


def test_a_loinc_code_or_the_alternative_spo2_code_is_resolved() -> None:
    assert resolve_measure("8867-4").key == "heart-rate"
    assert resolve_measure("59408-5").key == "oxygen-saturation"


# --- unit not convertible -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("measure", "unit"),
    [
        ("heart-rate", "kg"),
        ("body-temperature", "mg/dL"),
        ("blood-glucose", "mm[Hg]"),
        ("body-weight", "stone"),
        ("steps", "km"),
    ],
)
def test_a_unit_of_the_wrong_kind_is_refused_as_not_convertible(measure: str, unit: str) -> None:
    error = _reason(_validate, measure, 50, unit)
    assert error.reason is RejectReason.UNIT_NOT_CONVERTIBLE


def test_a_panel_in_a_unit_of_the_wrong_kind_is_refused_as_not_convertible() -> None:
    error = _reason(_validate, "blood-pressure", {"systolic": 120, "diastolic": 80}, "Cel")
    assert error.reason is RejectReason.UNIT_NOT_CONVERTIBLE


# --- implausible values -------------------------------------------------------------------


def _single_quantity(measure: Measure) -> Quantity:
    assert measure.quantity is not None
    return measure.quantity


@pytest.mark.parametrize("measure", SINGLE_MEASURES, ids=lambda m: m.key)
def test_plausible_range_boundaries_are_accepted(measure: Measure) -> None:
    q = _single_quantity(measure)
    for value in (q.low, q.high):
        (stored,) = validate_values(measure, _raw(measure.key, value, q.unit))
        assert (stored.code, stored.value, stored.unit) == (q.code, value, q.unit)


@pytest.mark.parametrize("measure", SINGLE_MEASURES, ids=lambda m: m.key)
def test_values_just_outside_the_plausible_range_are_implausible(measure: Measure) -> None:
    q = _single_quantity(measure)
    below = math.nextafter(q.low, -math.inf)
    above = math.nextafter(q.high, math.inf)
    for value in (below, above, q.low - 1000, q.high * 10):
        error = _reason(validate_values, measure, _raw(measure.key, value, q.unit))
        assert error.reason is RejectReason.IMPLAUSIBLE_VALUE


@pytest.mark.parametrize(
    ("systolic", "diastolic", "accepted"),
    [
        (30, 10, True),
        (300, 200, True),
        (29.99, 80, False),
        (300.01, 80, False),
        (120, 9.99, False),
        (120, 200.01, False),
    ],
)
def test_each_blood_pressure_component_has_its_own_inclusive_range(
    systolic: float, diastolic: float, accepted: bool
) -> None:
    raw = _raw("blood-pressure", {"systolic": systolic, "diastolic": diastolic}, "mm[Hg]")
    if accepted:
        values = validate_values(BP, raw)
        assert [(v.code, v.value) for v in values] == [("8480-6", systolic), ("8462-4", diastolic)]
    else:
        assert _reason(validate_values, BP, raw).reason is RejectReason.IMPLAUSIBLE_VALUE


def test_plausibility_is_judged_after_conversion_to_the_canonical_unit() -> None:
    # 110 °F is 43.3 °C, inside 25–45 °C; 120 °F is 48.9 °C, outside. 100 mmol/L is 1802 mg/dL.
    (value,) = _validate("body-temperature", 110, "[degF]")
    assert value.value == pytest.approx(43.3333, abs=1e-4)
    assert _reason(_validate, "body-temperature", 120, "[degF]").reason is (
        RejectReason.IMPLAUSIBLE_VALUE
    )
    assert _reason(_validate, "blood-glucose", 100, "mmol/L").reason is (
        RejectReason.IMPLAUSIBLE_VALUE
    )


def test_stored_values_are_rounded_to_four_decimals() -> None:
    (value,) = _validate("body-weight", 154, "[lb_av]")
    assert value.value == 69.8532


# --- malformed values ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False, "72", None])
def test_non_finite_boolean_or_text_values_are_malformed(value: Any) -> None:
    error = _reason(_validate, "heart-rate", value, "/min")
    assert error.reason is RejectReason.MALFORMED


@pytest.mark.parametrize("part", [math.nan, math.inf, True])
def test_a_non_finite_or_boolean_panel_component_is_malformed(part: Any) -> None:
    raw = _raw("blood-pressure", {"systolic": part, "diastolic": 80}, "mm[Hg]")
    assert _reason(validate_values, BP, raw).reason is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "value",
    [
        {"systolic": 120},
        {"diastolic": 80},
        {"systolic": 120, "diastolic": 80, "pulse": 70},
        {"Systolic": 120, "diastolic": 80},
        {},
        120,
    ],
)
def test_blood_pressure_needs_exactly_systolic_and_diastolic(value: Any) -> None:
    error = _reason(validate_values, BP, _raw("blood-pressure", value, "mm[Hg]"))
    assert error.reason is RejectReason.MALFORMED
    assert "systolic" in error.message and "diastolic" in error.message


def test_a_single_measure_given_an_object_is_malformed() -> None:
    error = _reason(_validate, "heart-rate", {"systolic": 72}, "/min")
    assert error.reason is RejectReason.MALFORMED


def test_an_integer_too_large_for_a_float_is_refused_not_crashed() -> None:
    # orjson turns such numbers into floats, but parse_item/validate_values take any parsed
    # JSON (e.g. from the stdlib json module, which keeps big ints exact).
    raw = parse_item(_item(type="steps", unit="{steps}", value=10**400))
    error = _reason(validate_values, resolve_measure(raw.measure), raw)
    assert error.reason in (RejectReason.IMPLAUSIBLE_VALUE, RejectReason.MALFORMED)


# --- the native item format ---------------------------------------------------------------


def test_a_complete_item_is_parsed_into_a_raw_reading() -> None:
    raw = parse_item(_item(time="2026-11-25T09:30:00+01:00", value=72.5))
    assert raw == RawReading(
        "m-1", "heart-rate", datetime(2026, 11, 25, 8, 30, tzinfo=UTC), 72.5, "/min"
    )


@pytest.mark.parametrize("field", ["id", "type", "time", "value", "unit"])
def test_a_missing_field_is_malformed_and_named(field: str) -> None:
    error = _reason(parse_item, _item(**{field: _MISSING}))
    assert error.reason is RejectReason.MALFORMED
    assert field in error.message


@pytest.mark.parametrize("field", ["id", "type", "time", "unit"])
@pytest.mark.parametrize("bad", ["", "   ", 7, None, ["x"]])
def test_a_text_field_that_is_empty_or_not_text_is_malformed(field: str, bad: Any) -> None:
    error = _reason(parse_item, _item(**{field: bad}))
    assert error.reason is RejectReason.MALFORMED
    assert field in error.message


@pytest.mark.parametrize(
    "value", [True, None, "72", [72], {}, {"systolic": "120", "diastolic": 80}, {"s": False}]
)
def test_a_value_that_is_not_a_number_or_object_of_numbers_is_malformed(value: Any) -> None:
    assert _reason(parse_item, _item(value=value)).reason is RejectReason.MALFORMED


@pytest.mark.parametrize("item", ["heart-rate 72", 72, None, [], ["id", "m-1"]])
def test_an_item_that_is_not_an_object_is_malformed(item: Any) -> None:
    assert _reason(parse_item, item).reason is RejectReason.MALFORMED


@pytest.mark.parametrize("time", ["2026-11-25T08:00:00", "2026-11-25T08:00:00.123456"])
def test_a_time_without_utc_offset_is_malformed(time: str) -> None:
    error = _reason(parse_item, _item(time=time))
    assert error.reason is RejectReason.MALFORMED
    assert "offset" in error.message


@pytest.mark.parametrize(
    "time",
    [
        "yesterday",
        "2026-02-30T08:00:00Z",
        "2026-11-25T25:00:00Z",
        "25/11/2026 08:00",
        "2026-11-25",  # a date is not a date-time
        "20261125T080000Z",  # ISO 8601 basic format is not RFC 3339
    ],
)
def test_a_time_that_is_not_a_date_time_is_malformed(time: str) -> None:
    error = _reason(parse_item, _item(time=time))
    assert error.reason is RejectReason.MALFORMED
    assert "time" in error.message


def test_a_message_id_longer_than_the_limit_is_malformed() -> None:
    longest = "x" * MAX_MESSAGE_ID_LENGTH
    assert parse_item(_item(id=longest)).message_id == longest
    error = _reason(parse_item, _item(id=longest + "x"))
    assert error.reason is RejectReason.MALFORMED
    assert "id" in error.message


# --- clock --------------------------------------------------------------------------------


def test_a_time_further_ahead_than_the_clock_skew_is_refused() -> None:
    ahead = NOW + SKEW + timedelta(microseconds=1)
    error = _reason(check_effective_time, ahead, NOW, SKEW)
    assert error.reason is RejectReason.FUTURE_TIMESTAMP
    far = NOW + timedelta(days=365)
    assert _reason(check_effective_time, far, NOW, SKEW).reason is RejectReason.FUTURE_TIMESTAMP


@pytest.mark.parametrize(
    "offset", [SKEW, SKEW - timedelta(seconds=1), timedelta(0), -timedelta(days=3650)]
)
def test_a_time_within_the_clock_skew_or_in_the_past_is_accepted(offset: timedelta) -> None:
    check_effective_time(NOW + offset, NOW, SKEW)


def test_skew_is_compared_across_utc_offsets() -> None:
    # 14:04 at +02:00 is 12:04 UTC: within five minutes of 12:00 UTC, though 14:04 "looks" ahead.
    plus_two = timezone(timedelta(hours=2))
    check_effective_time(datetime(2026, 11, 25, 14, 4, tzinfo=plus_two), NOW, SKEW)
    late = datetime(2026, 11, 25, 12, 6, tzinfo=UTC)
    assert _reason(check_effective_time, late, NOW, SKEW).reason is RejectReason.FUTURE_TIMESTAMP


def test_a_naive_time_is_malformed_at_the_clock_check_too() -> None:
    error = _reason(check_effective_time, datetime(2026, 11, 25, 8, 0), NOW, SKEW)
    assert error.reason is RejectReason.MALFORMED


# --- whole bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b'{"readings": [NaN]}',
        b"[]",
        b'"readings"',
        b"null",
        b"{}",
        b'{"readings": 5}',
        b'{"readings": {"0": {}}}',
        b'{"Readings": []}',
    ],
)
def test_a_body_that_is_not_a_readings_document_is_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedBody) as caught:
        parse_body(body, 10)
    assert caught.value.reason is RejectReason.MALFORMED_BODY


def test_a_batch_over_the_limit_is_malformed_body_and_the_limit_itself_is_fine() -> None:
    items = [_item(id=f"m-{i}") for i in range(11)]
    assert len(parse_body(orjson.dumps({"readings": items[:10]}), 10)) == 10
    with pytest.raises(MalformedBody) as caught:
        parse_body(orjson.dumps({"readings": items}), 10)
    assert "10" in caught.value.message


def test_bad_items_in_a_body_are_kept_with_their_error_and_usable_id() -> None:
    body = orjson.dumps(
        {
            "readings": [
                _item(id="good"),
                _item(id="no-time", time=_MISSING),
                "junk",
                _item(id="x" * (MAX_MESSAGE_ID_LENGTH + 1)),
            ]
        }
    )
    good, no_time, junk, long_id = parse_body(body, 10)
    assert good.error is None and good.reading is not None and good.message_id == "good"
    assert no_time.reading is None and no_time.message_id == "no-time"
    assert no_time.error is not None and no_time.error.reason is RejectReason.MALFORMED
    assert junk.message_id is None and junk.error is not None
    assert long_id.message_id is None and long_id.error is not None
    assert orjson.loads(junk.payload) == "junk"


# --- messages carry no health data --------------------------------------------------------


@pytest.mark.parametrize(
    ("measure", "value", "unit"),
    [
        ("heart-rate", 987.654, "/min"),
        ("heart-rate", 987.654, "kg"),
        ("body-temperature", 987.654, "[degF]"),
        ("blood-pressure", {"systolic": 987.654, "diastolic": 80}, "mm[Hg]"),
        ("blood-pressure", {"systolic": 987.654}, "mm[Hg]"),
        ("steps", -987.654, "{steps}"),
    ],
)
def test_rejection_messages_do_not_quote_the_submitted_value(
    measure: str, value: Any, unit: str
) -> None:
    error = _reason(_validate, measure, value, unit)
    assert "987" not in error.message
    assert "987" not in str(error)
