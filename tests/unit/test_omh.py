"""The Open mHealth parser: data point shapes, unit mapping to UCUM, time frames, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import RawReading
from medmesh.domain.validation import resolve_measure, validate_values
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import MalformedBody
from medmesh.ingest.omh import parse_data_point, parse_omh

AT = "2026-11-25T08:00:00Z"
MOMENT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def point(
    name: str, body: dict[str, Any], uid: str = "dp-1", version: str = "2.0"
) -> dict[str, Any]:
    body.setdefault("effective_time_frame", {"date_time": AT})
    return {
        "header": {
            "uuid": uid,
            "schema_id": {"namespace": "omh", "name": name, "version": version},
            "source_creation_date_time": AT,
        },
        "body": body,
    }


def uv(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit}


def parse(document: Any, max_readings: int = 100) -> list[Incoming]:
    return parse_omh(orjson.dumps(document), "device-1", max_readings)


def reading_of(document: Any) -> RawReading:
    return parse_data_point(document)


def refusal(document: Any) -> InvalidReading:
    with pytest.raises(InvalidReading) as caught:
        parse_data_point(document)
    return caught.value


def test_heart_rate_data_point_becomes_one_reading() -> None:
    (item,) = parse(point("heart-rate", {"heart_rate": uv(72, "beats/min")}))
    assert item.error is None
    assert item.message_id == "dp-1"
    assert item.reading == RawReading("dp-1", "heart-rate", MOMENT, 72, "/min")
    assert orjson.loads(item.payload)["body"]["heart_rate"]["value"] == 72


def test_omh_1x_header_id_is_the_message_id() -> None:
    document = point("heart-rate", {"heart_rate": uv(60, "beats/min")})
    header = document["header"]
    del header["uuid"]
    header["id"] = "123e4567-e89b-12d3-a456-426655440000"
    header["creation_date_time"] = AT
    assert reading_of(document).message_id == "123e4567-e89b-12d3-a456-426655440000"


def test_ieee_uuid_wins_over_id() -> None:
    document = point("heart-rate", {"heart_rate": uv(60, "beats/min")}, uid="the-uuid")
    document["header"]["id"] = "the-id"
    assert reading_of(document).message_id == "the-uuid"


@pytest.mark.parametrize(
    ("name", "body", "measure", "value", "unit"),
    [
        ("heart-rate", {"heart_rate": uv(72, "beats/min")}, "heart-rate", 72, "/min"),
        (
            "respiratory-rate",
            {"respiratory_rate": uv(16, "breaths/min")},
            "respiratory-rate",
            16,
            "/min",
        ),
        (
            "blood-pressure",
            {
                "systolic_blood_pressure": uv(128, "mmHg"),
                "diastolic_blood_pressure": uv(82, "mmHg"),
            },
            "blood-pressure",
            {"systolic": 128, "diastolic": 82},
            "mm[Hg]",
        ),
        ("blood-glucose", {"blood_glucose": uv(104, "mg/dL")}, "blood-glucose", 104, "mg/dL"),
        ("blood-glucose", {"blood_glucose": uv(5.8, "mmol/L")}, "blood-glucose", 5.8, "mmol/L"),
        (
            "blood-glucose",
            {"blood_glucose": uv(110, "mg/dL"), "specimen_source": "capillary blood"},
            "blood-glucose",
            110,
            "mg/dL",
        ),
        (
            "blood-glucose",
            {"blood_glucose": uv(110, "mg/dL"), "specimen_source": "interstitial fluid"},
            "cgm-glucose",
            110,
            "mg/dL",
        ),
        (
            "blood-glucose",
            {"blood_glucose": uv(110, "mg/dL"), "blood_specimen_type": "whole blood"},
            "blood-glucose",
            110,
            "mg/dL",
        ),
        ("oxygen-saturation", {"oxygen_saturation": uv(97, "%")}, "oxygen-saturation", 97, "%"),
        ("body-temperature", {"body_temperature": uv(37.2, "C")}, "body-temperature", 37.2, "Cel"),
        (
            "body-temperature",
            {"body_temperature": uv(98.6, "F")},
            "body-temperature",
            98.6,
            "[degF]",
        ),
        ("body-weight", {"body_weight": uv(70.5, "kg")}, "body-weight", 70.5, "kg"),
        ("body-weight", {"body_weight": uv(154, "lb")}, "body-weight", 154, "[lb_av]"),
        ("body-weight", {"body_weight": uv(70500, "g")}, "body-weight", 70500, "g"),
        ("step-count", {"step_count": uv(412, "steps")}, "steps", 412, "{steps}"),
        ("step-count", {"step_count": 412}, "steps", 412, "{steps}"),
    ],
)
def test_schema_body_maps_to_measure_and_ucum_unit(
    name: str, body: dict[str, Any], measure: str, value: Any, unit: str
) -> None:
    raw = reading_of(point(name, body))
    assert (raw.measure, raw.value, raw.unit) == (measure, value, unit)
    # and the domain can convert what the parser produced to the canonical unit
    validate_values(resolve_measure(raw.measure), raw)


def test_kelvin_body_temperature_is_stored_in_celsius() -> None:
    raw = reading_of(point("body-temperature", {"body_temperature": uv(310.15, "K")}))
    assert raw.unit == "Cel"
    assert raw.value == pytest.approx(37.0)


def test_converted_values_reach_the_canonical_unit() -> None:
    fever = reading_of(point("body-temperature", {"body_temperature": uv(98.6, "F")}))
    (celsius,) = validate_values(resolve_measure(fever.measure), fever)
    assert (celsius.value, celsius.unit) == (37.0, "Cel")
    heavy = reading_of(point("body-weight", {"body_weight": uv(154, "lb")}))
    (kilograms,) = validate_values(resolve_measure(heavy.measure), heavy)
    assert (round(kilograms.value, 1), kilograms.unit) == (69.9, "kg")


@pytest.mark.parametrize(
    "specimen", [{"specimen_source": "urine"}, {"blood_specimen_type": "plasma"}]
)
def test_glucose_from_a_specimen_medmesh_has_no_code_for_is_unknown(
    specimen: dict[str, str],
) -> None:
    error = refusal(point("blood-glucose", {"blood_glucose": uv(90, "mg/dL"), **specimen}))
    assert error.reason is RejectReason.UNKNOWN_CODE


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"date_time": "2026-11-25T09:00:00+01:00"}, MOMENT),
        ({"date_time": "2026-11-25T08:00:00"}, MOMENT),  # IEEE 1752.1: no offset means UTC
        (
            {
                "time_interval": {
                    "start_date_time": "2026-11-25T07:00:00Z",
                    "end_date_time": AT,
                }
            },
            MOMENT,
        ),
        ({"time_interval": {"end_date_time": AT, "duration": uv(1, "h")}}, MOMENT),
        (
            {
                "time_interval": {
                    "start_date_time": "2026-11-25T07:45:00Z",
                    "duration": uv(15, "min"),
                }
            },
            MOMENT,
        ),
        (
            {
                "time_interval": {
                    "start_date_time": "2026-11-25T07:59:30Z",
                    "duration": uv(30000, "ms"),
                }
            },
            MOMENT,
        ),
    ],
)
def test_effective_time_is_the_date_time_or_the_end_of_the_interval(
    frame: dict[str, Any], expected: datetime
) -> None:
    body = {"step_count": uv(100, "steps"), "effective_time_frame": frame}
    effective = reading_of(point("step-count", body)).effective
    assert effective == expected
    assert effective.tzinfo is not None


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({}, "body.effective_time_frame"),
        ({"date_time": "yesterday"}, "body.effective_time_frame.date_time"),
        ({"date_time": "2026-11-25"}, "body.effective_time_frame.date_time"),
        ({"date_time": 1795593600}, "body.effective_time_frame.date_time"),
        (
            {"time_interval": {"date": "2026-11-25", "part_of_day": "morning"}},
            "body.effective_time_frame.time_interval",
        ),
        (
            {"time_interval": {"start_date_time": AT, "duration": uv(1, "Mo")}},
            "body.effective_time_frame.time_interval.duration",
        ),
    ],
)
def test_unusable_time_frame_is_malformed_naming_the_field(
    frame: dict[str, Any], field: str
) -> None:
    body = {"heart_rate": uv(70, "beats/min"), "effective_time_frame": frame}
    error = refusal(point("heart-rate", body))
    assert error.reason is RejectReason.MALFORMED
    assert f"'{field}'" in error.message


def test_missing_time_frame_is_malformed() -> None:
    document = point("heart-rate", {"heart_rate": uv(70, "beats/min")})
    del document["body"]["effective_time_frame"]
    error = refusal(document)
    assert error.reason is RejectReason.MALFORMED
    assert "body.effective_time_frame" in error.message


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (lambda d: d.pop("header"), "header"),
        (lambda d: d.pop("body"), "body"),
        (lambda d: d["header"].pop("uuid"), "header.uuid"),
        (lambda d: d["header"].update(uuid="x" * 129), "header.uuid"),
        (lambda d: d["header"].pop("schema_id"), "header.schema_id"),
        (lambda d: d["header"]["schema_id"].pop("name"), "header.schema_id.name"),
        (lambda d: d["header"]["schema_id"].pop("namespace"), "header.schema_id.namespace"),
        (lambda d: d["body"].pop("heart_rate"), "body.heart_rate"),
        (lambda d: d["body"]["heart_rate"].update(value="72"), "body.heart_rate.value"),
        (lambda d: d["body"]["heart_rate"].update(value=True), "body.heart_rate.value"),
        (lambda d: d["body"]["heart_rate"].pop("unit"), "body.heart_rate.unit"),
    ],
)
def test_missing_or_mistyped_field_is_malformed_naming_it(breakage: Any, field: str) -> None:
    document = point("heart-rate", {"heart_rate": uv(72, "beats/min")})
    breakage(document)
    error = refusal(document)
    assert error.reason is RejectReason.MALFORMED
    assert f"'{field}'" in error.message
    assert "72" not in error.message  # the field is named, the value never


def test_blood_pressure_needs_both_parts_in_one_unit() -> None:
    only_systolic = point("blood-pressure", {"systolic_blood_pressure": uv(120, "mmHg")})
    assert "body.diastolic_blood_pressure" in refusal(only_systolic).message
    mixed = point(
        "blood-pressure",
        {"systolic_blood_pressure": uv(16, "kPa"), "diastolic_blood_pressure": uv(80, "mmHg")},
    )
    assert refusal(mixed).reason is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "schema_id",
    [
        {"namespace": "omh", "name": "sleep-duration", "version": "2.0"},
        {"namespace": "acme", "name": "heart-rate", "version": "1.0"},
    ],
)
def test_schema_medmesh_does_not_read_is_an_unknown_code(schema_id: dict[str, str]) -> None:
    document = point("heart-rate", {"heart_rate": uv(72, "beats/min")})
    document["header"]["schema_id"] = schema_id
    (item,) = parse(document)
    assert item.error is not None
    assert item.error.reason is RejectReason.UNKNOWN_CODE
    assert item.message_id == "dp-1"


def test_batch_keeps_good_points_and_refuses_bad_ones_one_by_one() -> None:
    good = point("heart-rate", {"heart_rate": uv(72, "beats/min")}, uid="good")
    unknown = point("sleep-duration", {"sleep_duration": uv(7, "h")}, uid="unknown")
    no_body = point("heart-rate", {}, uid="no-body")
    del no_body["body"]
    items = parse([good, unknown, no_body, "not an object"])
    assert [i.message_id for i in items] == ["good", "unknown", "no-body", None]
    assert items[0].reading is not None
    assert [i.error.reason if i.error else None for i in items] == [
        None,
        RejectReason.UNKNOWN_CODE,
        RejectReason.MALFORMED,
        RejectReason.MALFORMED,
    ]


def test_unknown_unit_passes_through_for_the_pipeline_to_refuse() -> None:
    raw = reading_of(point("body-weight", {"body_weight": uv(11, "stone")}))
    assert raw.unit == "stone"


@pytest.mark.parametrize("body", [b"{not json", b"42", b'"text"', b"null"])
def test_body_that_is_not_data_points_is_refused_whole(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_omh(body, "device-1", 10)


def test_empty_array_is_an_empty_batch() -> None:
    assert parse([]) == []


def test_too_many_data_points_are_refused_whole() -> None:
    points = [
        point("heart-rate", {"heart_rate": uv(60, "beats/min")}, uid=f"p{i}") for i in range(4)
    ]
    with pytest.raises(MalformedBody, match="at most 3"):
        parse(points, max_readings=3)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "heart_rate",
        "blood_glucose",
        "effective_time_frame",
        "value",
        "unit",
        "date_time",
        "time_interval",
        "start_date_time",
        "duration",
        "specimen_source",
        "step_count",
    ]
)
_omh_like = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.sampled_from([AT, "C", "h", "beats/min"]),
    lambda children: st.dictionaries(_keys, children, max_size=4),
    max_leaves=15,
)


@given(_json)
def test_any_json_is_parsed_or_refused_never_crashes(document: Any) -> None:
    try:
        items = parse(document)
    except InvalidReading:
        return
    assert all((i.reading is None) != (i.error is None) for i in items)


@given(
    st.sampled_from(["heart-rate", "blood-glucose", "step-count", "body-temperature"]), _omh_like
)
def test_any_body_of_a_known_schema_is_parsed_or_refused_never_crashes(
    name: str, body: Any
) -> None:
    document = point(name, {}) | {"body": body}
    (item,) = parse(document)
    assert (item.reading is None) != (item.error is None)
