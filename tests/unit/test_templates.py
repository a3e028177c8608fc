"""Mapping templates: loading (bad files fail loudly), and reading vendor payloads with them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.config import Settings
from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import MalformedBody
from medmesh.ingest.templates import (
    _JSONPATH,
    InvalidTemplate,
    MappingTemplate,
    _compile,
    _MemberPath,
    load_template,
    load_templates,
    parser_for,
)
from medmesh.services import build_formats

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "templates"
MOMENT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MILLIS = 1_795_593_600_000  # MOMENT in epoch milliseconds


def template(**fields: Any) -> MappingTemplate:
    base: dict[str, Any] = {
        "name": "test",
        "messageId": "$.id",
        "time": "$.t",
        "measurements": [{"type": "heart-rate", "value": "$.hr", "unit": "bpm"}],
    }
    return MappingTemplate.model_validate(base | fields)


def run(
    t: MappingTemplate, document: Any, device_id: str = "dev-1", limit: int = 100
) -> list[Incoming]:
    return parser_for(t, limit)(orjson.dumps(document), device_id)


def outcome(items: list[Incoming]) -> list[tuple[str | None, str]]:
    """(message id, measure or reject reason) per item."""
    return [
        (i.message_id, i.reading.measure if i.reading else str(i.error.reason if i.error else ""))
        for i in items
    ]


@pytest.fixture(scope="module")
def shipped() -> dict[str, MappingTemplate]:
    return {t.name: t for t in load_templates(SHIPPED)}


def test_shipped_templates_load(shipped: dict[str, MappingTemplate]) -> None:
    assert sorted(shipped) == ["acme-oximeter", "vitalband"]
    assert shipped["acme-oximeter"].format_name == "template/acme-oximeter"


def test_acme_batch_gives_two_readings_per_spot_check(shipped: dict[str, MappingTemplate]) -> None:
    body = {
        "device": {"id": "dev-1", "model": "AO-200"},
        "measurements": [
            {"seq": 1001, "ts": "2026-11-25T08:00:00Z", "spo2": 97, "pr": 72},
            {"seq": 1002, "ts": "2026-11-25T09:01:00+01:00", "spo2": 96},
        ],
    }
    items = run(shipped["acme-oximeter"], body)
    assert outcome(items) == [
        ("1001-spo2", "oxygen-saturation"),
        ("1001-pr", "heart-rate"),
        ("1002-spo2", "oxygen-saturation"),  # no pulse rate: skipped, not an error
    ]
    first = items[0].reading
    assert first is not None
    assert (first.effective, first.value, first.unit) == (MOMENT, 97, "%")
    assert items[1].reading is not None and items[1].reading.unit == "bpm"
    assert items[2].reading is not None and items[2].reading.effective.minute == 1
    assert orjson.loads(items[0].payload)["seq"] == 1001


def test_acme_body_for_another_device_is_refused_whole(
    shipped: dict[str, MappingTemplate],
) -> None:
    body = {"device": {"id": "someone-else"}, "measurements": []}
    with pytest.raises(InvalidReading) as caught:
        run(shipped["acme-oximeter"], body)
    assert caught.value.reason is RejectReason.DEVICE_MISMATCH


def test_acme_body_without_a_device_is_accepted_and_empty_batch_is_empty(
    shipped: dict[str, MappingTemplate],
) -> None:
    assert run(shipped["acme-oximeter"], {"measurements": []}) == []


def test_body_of_another_shape_fails_the_template_type_match(
    shipped: dict[str, MappingTemplate],
) -> None:
    with pytest.raises(MalformedBody, match="acme-oximeter"):
        run(shipped["acme-oximeter"], {"readings": []})


def test_vitalband_samples_are_told_apart_by_kind(shipped: dict[str, MappingTemplate]) -> None:
    body = {
        "band": "VB-3",
        "samples": [
            {"id": "s1", "kind": "hr", "t": MILLIS, "v": 68},
            {"id": "s2", "kind": "spo2", "t": MILLIS, "v": 98},
            {"id": "s3", "kind": "bp", "t": MILLIS, "sys": 121, "dia": 79, "u": "mmHg"},
            {"id": "s4", "kind": "temp", "t": MILLIS, "v": 97.9, "u": "F"},
            {"id": "s5", "kind": "steps", "t": MILLIS + 60_000, "v": 412},
            {"id": "s6", "kind": "battery", "t": MILLIS, "v": 81},
        ],
    }
    items = run(shipped["vitalband"], body)
    assert outcome(items) == [
        ("s1-hr", "heart-rate"),
        ("s2-spo2", "oxygen-saturation"),
        ("s3-bp", "blood-pressure"),
        ("s4-temp", "body-temperature"),
        ("s5-steps", "steps"),
        ("s6", "malformed"),  # a kind the template does not read is reported, not dropped
    ]
    readings = [i.reading for i in items if i.reading is not None]
    assert all(r.effective == MOMENT for r in readings[:4])
    assert readings[2].value == {"systolic": 121, "diastolic": 79}
    assert readings[2].unit == "mmHg"
    assert readings[3].unit == "F"
    assert readings[4].effective == datetime(2026, 11, 25, 8, 1, tzinfo=UTC)


def test_blood_pressure_with_one_part_missing_names_the_part(
    shipped: dict[str, MappingTemplate],
) -> None:
    body = {"samples": [{"id": "s", "kind": "bp", "t": MILLIS, "sys": 121, "u": "mmHg"}]}
    (item,) = run(shipped["vitalband"], body)
    assert item.error is not None and item.error.reason is RejectReason.MALFORMED
    assert "'diastolic'" in item.error.message
    assert "121" not in item.error.message


@pytest.mark.parametrize(
    ("time_format", "value"),
    [
        ("epoch-seconds", MILLIS // 1000),
        ("epoch-seconds", str(MILLIS // 1000)),
        ("epoch-millis", MILLIS),
        ("epoch-millis", float(MILLIS)),
        ("iso8601", "2026-11-25T08:00:00Z"),
    ],
)
def test_time_formats(time_format: str, value: Any) -> None:
    (item,) = run(template(timeFormat=time_format), {"id": "m", "t": value, "hr": 70})
    assert item.reading is not None and item.reading.effective == MOMENT


@pytest.mark.parametrize(
    ("time_format", "value"),
    [
        ("iso8601", "2026-11-25T08:00:00"),  # no offset: ambiguous
        ("iso8601", MILLIS),
        ("iso8601", None),
        ("epoch-millis", "soon"),
        ("epoch-millis", True),
        ("epoch-seconds", 1e20),
    ],
)
def test_unusable_time_is_malformed_naming_the_field(time_format: str, value: Any) -> None:
    (item,) = run(template(timeFormat=time_format), {"id": "m", "t": value, "hr": 70})
    assert item.error is not None and item.error.reason is RejectReason.MALFORMED
    assert "'time'" in item.error.message


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"t": "2026-11-25T08:00:00Z", "hr": 70}, "messageId"),
        ({"id": True, "t": "2026-11-25T08:00:00Z", "hr": 70}, "messageId"),
        ({"id": "x" * 129, "t": "2026-11-25T08:00:00Z", "hr": 70}, "messageId"),
        ({"id": "m", "t": "2026-11-25T08:00:00Z", "hr": "70"}, "value"),
        ({"id": "m", "t": "2026-11-25T08:00:00Z", "hr": [70, 71]}, "value"),
    ],
)
def test_bad_item_is_malformed_naming_the_field(item: dict[str, Any], field: str) -> None:
    (incoming,) = run(template(), item)
    assert incoming.error is not None and incoming.error.reason is RejectReason.MALFORMED
    assert f"'{field}'" in incoming.error.message
    assert "70" not in incoming.error.message


def test_path_finding_several_values_is_malformed() -> None:
    t = template(measurements=[{"type": "heart-rate", "value": "$.hr[*]", "unit": "bpm"}])
    (item,) = run(t, {"id": "m", "t": "2026-11-25T08:00:00Z", "hr": [70, 71]})
    assert item.error is not None and "several" in item.error.message


def test_null_value_counts_as_absent() -> None:
    (item,) = run(template(), {"id": "m", "t": "2026-11-25T08:00:00Z", "hr": None})
    assert item.error is not None and "none of the template's measurements" in item.error.message


def test_unit_can_be_read_from_the_payload() -> None:
    t = template(measurements=[{"type": "body-weight", "value": "$.w", "unit": "$.u"}])
    (ok,) = run(t, {"id": "a", "t": "2026-11-25T08:00:00Z", "w": 154, "u": "lb"})
    assert ok.reading is not None and ok.reading.unit == "lb"
    (missing,) = run(t, {"id": "b", "t": "2026-11-25T08:00:00Z", "w": 154})
    assert missing.error is not None and "'unit'" in missing.error.message


def test_body_array_is_a_batch_of_items_by_default() -> None:
    items = run(
        template(),
        [
            {"id": 1, "t": "2026-11-25T08:00:00Z", "hr": 70},
            {"id": 2, "t": "2026-11-25T08:01:00Z", "hr": 71},
            "not an object",
        ],
    )
    assert outcome(items) == [("1", "heart-rate"), ("2", "heart-rate"), (None, "malformed")]


def test_items_path_may_select_nodes_or_one_array() -> None:
    body = {"data": [{"id": "a", "t": "2026-11-25T08:00:00Z", "hr": 70}]}
    for items_path in ("$.data", "$.data[*]"):
        (item,) = run(template(items=items_path), body)
        assert item.message_id == "a"
    with pytest.raises(MalformedBody, match=r"\$\.data"):
        run(template(items="$.data"), {"other": []})


def test_filter_expressions_select_items() -> None:
    t = template(items="$.data[?@.kind == 'hr']")
    body = {
        "data": [
            {"id": "a", "kind": "hr", "t": "2026-11-25T08:00:00Z", "hr": 70},
            {"id": "b", "kind": "battery", "t": "2026-11-25T08:00:00Z", "level": 80},
        ]
    }
    assert outcome(run(t, body)) == [("a", "heart-rate")]


def test_device_id_may_be_a_number_and_must_match() -> None:
    t = template(deviceId="$.device")
    item = {"id": "a", "t": "2026-11-25T08:00:00Z", "hr": 70}
    assert len(run(t, {"device": 42, **item}, device_id="42")) == 1
    with pytest.raises(InvalidReading) as caught:
        run(t, {"device": 43, **item}, device_id="42")
    assert caught.value.reason is RejectReason.DEVICE_MISMATCH


@pytest.mark.parametrize("body", [b"{not json", b"17", b'"x"'])
def test_body_that_is_not_json_object_or_array_is_refused_whole(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parser_for(template(), 10)(body, "dev-1")


def test_too_many_items_or_readings_are_refused_whole(shipped: dict[str, MappingTemplate]) -> None:
    items = [{"id": i, "t": "2026-11-25T08:00:00Z", "hr": 70} for i in range(4)]
    with pytest.raises(MalformedBody, match="at most 3"):
        run(template(), items, limit=3)
    checks = [{"seq": i, "ts": "2026-11-25T08:00:00Z", "spo2": 97, "pr": 70} for i in range(2)]
    with pytest.raises(MalformedBody, match="at most 3"):  # 2 items, 4 readings
        run(shipped["acme-oximeter"], {"measurements": checks}, limit=3)


def test_single_measurement_template_uses_the_item_id_unchanged() -> None:
    (item,) = run(template(), {"id": "m-1", "t": "2026-11-25T08:00:00Z", "hr": 70})
    assert item.message_id == "m-1"


# -- loading: a bad template must stop start-up, naming the file and the field -------------

GOOD: dict[str, Any] = {
    "name": "good",
    "messageId": "$.id",
    "time": "$.t",
    "measurements": [{"type": "heart-rate", "value": "$.hr", "unit": "bpm"}],
}


def _write(directory: Path, name: str, content: Any) -> Path:
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _with(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in (GOOD | changes).items() if v is not None}


def _measurement(**changes: Any) -> dict[str, Any]:
    return _with(measurements=[{"type": "heart-rate", "value": "$.hr", "unit": "bpm"} | changes])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ([], "(template)"),
        (_with(messageId=None), "messageId"),
        (_with(messageID="$.id"), "messageID"),  # typo: unknown keys are refused
        (_with(name="acme/oximeter"), "name"),
        (_with(timeFormat="rfc2822"), "timeFormat"),
        (_with(time="$.t["), "time"),
        (_with(items="data[*]"), "items"),
        (_with(measurements=[]), "measurements"),
        (_measurement(type="blood-alcohol"), "type"),
        (_measurement(unit="kg"), "unit"),
        (_measurement(unit="$.u["), "measurements.0"),
        (_measurement(value=None, values={"a": "$.a"}), "value"),
        (_measurement(messageIdSuffix="a b"), "messageIdSuffix"),
        (_measurement(typeMatch={"path": "kind", "equals": "hr"}), "typeMatch.path"),
        (
            _with(
                measurements=[
                    {"type": "blood-pressure", "value": "$.bp", "unit": "mmHg"},
                ]
            ),
            "values",
        ),
        (
            _with(
                measurements=[
                    {
                        "type": "blood-pressure",
                        "values": {"systolic": "$.s", "diastole": "$.d"},
                        "unit": "mmHg",
                    },
                ]
            ),
            "systolic, diastolic",
        ),
        (
            _with(
                measurements=[
                    {"type": "heart-rate", "value": "$.a", "unit": "bpm", "messageIdSuffix": "x"},
                    {"type": "heart-rate", "value": "$.b", "unit": "bpm", "messageIdSuffix": "x"},
                ]
            ),
            "messageIdSuffix",
        ),
    ],
)
def test_bad_template_fails_naming_the_file_and_the_field(
    tmp_path: Path, content: Any, expected: str
) -> None:
    path = _write(tmp_path, "vendor.json", content)
    with pytest.raises(InvalidTemplate) as caught:
        load_templates(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_two_templates_with_one_name_fail_naming_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.json", GOOD)
    second = _write(tmp_path, "b.json", GOOD)
    with pytest.raises(InvalidTemplate) as caught:
        load_templates(tmp_path)
    assert str(second) in str(caught.value) and str(first) in str(caught.value)


def test_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate, match="not a directory"):
        load_templates(tmp_path / "absent")


def test_only_json_files_are_templates(tmp_path: Path) -> None:
    _write(tmp_path, "good.json", GOOD)
    _write(tmp_path, "README.md", "# notes")
    assert [t.name for t in load_templates(tmp_path)] == ["good"]
    assert load_template(tmp_path / "good.json").name == "good"


def test_build_formats_registers_omh_and_each_template() -> None:
    names = build_formats(Settings(templates_dir=SHIPPED)).names
    assert {"native", "omh", "template/acme-oximeter", "template/vitalband"} <= set(names)
    assert "template/acme-oximeter" not in build_formats(Settings()).names


def test_build_formats_fails_on_a_bad_template(tmp_path: Path) -> None:
    _write(tmp_path, "broken.json", _with(time="$.["))
    with pytest.raises(InvalidTemplate, match=r"broken\.json"):
        build_formats(Settings(templates_dir=tmp_path))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "kind", "t", "v", "u", "sys", "dia", "samples"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(_json)
def test_any_json_is_parsed_or_refused_never_crashes(document: Any) -> None:
    vitalband = load_template(SHIPPED / "vitalband.json")
    try:
        items = run(vitalband, document)
    except InvalidReading:
        return
    assert all((i.reading is None) != (i.error is None) for i in items)


_names = st.sampled_from(["a", "b", "_c", "d1"])
_nested = st.recursive(
    st.none() | st.integers(0, 9) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_names, children, max_size=3),
    max_leaves=12,
)


# Objects only: python-jsonpath would read a top-level string as JSON text; the parser only
# ever queries objects and arrays.
@given(st.lists(_names, max_size=4), st.dictionaries(_names, _nested, max_size=3))
def test_member_paths_select_what_rfc_9535_selects(names: list[str], document: Any) -> None:
    text = "".join(["$", *(f".{n}" for n in names)])
    fast = _compile(text)
    assert isinstance(fast, _MemberPath)  # the shortcut is taken for $.a.b paths...
    assert fast.findall(document) == _JSONPATH.compile(text).findall(document)  # ...and agrees
