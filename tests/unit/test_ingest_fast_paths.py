"""The ingest path's shortcuts give what the general code gives: the observation id built from
the SHA-1 digest is uuid5's text, a well-formed native item becomes the reading `parse_item`
makes of it, and plain numbers are validated as before."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain.errors import InvalidReading
from medmesh.domain.reading import (
    _OBSERVATION_NAMESPACE,
    MeasuredValue,
    RawReading,
    Reading,
    observation_id,
)
from medmesh.domain.validation import resolve_measure, validate_values
from medmesh.domain.vocabulary import MEASURES
from medmesh.ingest.native import _well_formed, parse_body, parse_item

texts = st.text(max_size=200)


@given(texts, texts)
def test_observation_id_is_the_uuid5_of_device_and_message(device_id: str, message_id: str) -> None:
    expected = str(uuid.uuid5(_OBSERVATION_NAMESPACE, f"{device_id}\x1f{message_id}"))
    assert observation_id(device_id, message_id) == expected


def test_a_reading_carries_the_uuid5_observation_id() -> None:
    reading = Reading(
        "3f1c9a52-5d1e-4f0e-9a57-3c2b8d7e4a10",
        "m-é-1",
        "p",
        resolve_measure("heart-rate"),
        datetime(2026, 11, 25, tzinfo=UTC),
        (MeasuredValue("8867-4", 72.0, "/min"),),
    )
    name = "3f1c9a52-5d1e-4f0e-9a57-3c2b8d7e4a10\x1fm-é-1"
    assert reading.observation_id == str(uuid.uuid5(_OBSERVATION_NAMESPACE, name))


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "heart-rate",
            "8867-4",
            "/min",
            "bpm",
            "2026-11-25T08:00:00Z",
            "2026-11-25t08:00:00z",
            "2026-02-30T08:00:00Z",
            "2026-11-25T08:00:00",
            "2026-11-25T08:00:00.123+01:00",
            " ",
            "m-1",
            "a\x00b",
            "x" * 129,
        ]
    ),
    st.dictionaries(st.sampled_from(["systolic", "diastolic"]), st.integers(0, 300)),
)


@given(
    st.dictionaries(st.sampled_from(["id", "type", "time", "value", "unit", "note"]), field_values)
)
def test_a_well_formed_item_reads_as_parse_item_reads_it(item: dict[str, Any]) -> None:
    fast = _well_formed(item)
    try:
        general: RawReading | InvalidReading = parse_item(item)
    except InvalidReading as exc:
        general = exc
    if fast is not None:
        assert fast == general
        assert fast.effective.tzinfo is not None


def test_a_typical_item_takes_the_fast_path() -> None:
    item = {"id": "m-1", "type": "heart-rate", "time": "2026-11-25T08:00:00Z", "value": 72}
    item["unit"] = "/min"
    assert _well_formed(item) == parse_item(item)
    assert _well_formed({**item, "value": {"systolic": 120}}) is None  # panels: general path


def test_a_body_of_fast_and_refused_items_keeps_order_and_payloads() -> None:
    body = (
        b'{"readings": [{"id": "m-1", "type": "heart-rate", "time": "2026-11-25T08:00:00Z",'
        b' "value": 72, "unit": "/min"}, {"id": "m-2", "type": "heart-rate", "time": "soon",'
        b' "value": 72, "unit": "/min"}]}'
    )
    first, second = parse_body(body, 10)
    assert first.reading is not None and first.message_id == "m-1"
    assert first.payload.startswith('{"id":"m-1"')
    assert second.reading is None and second.error is not None
    assert second.message_id == "m-2"


SINGLE = [m for m in MEASURES if m.quantity is not None]


@pytest.mark.parametrize("measure", SINGLE, ids=lambda m: m.key)
@given(
    value=st.one_of(
        st.integers(min_value=-(2**1030), max_value=2**1030),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
    )
)
def test_plain_numbers_validate_as_the_general_rules_say(measure: Any, value: Any) -> None:
    quantity = measure.quantity
    raw = RawReading("m-1", measure.key, datetime(2026, 11, 25, tzinfo=UTC), value, quantity.unit)
    try:
        (measured,) = validate_values(measure, raw)
    except InvalidReading:
        # The rules: a finite number (never a bool), within the plausible range, whole when
        # counted.
        try:
            number = float(value)
        except OverflowError:
            number = math.nan
        assert (
            isinstance(value, bool)
            or not math.isfinite(number)
            or not quantity.low <= number <= quantity.high
            or (quantity.whole and not number.is_integer())
        )
        return
    assert not isinstance(value, bool)
    assert measured == MeasuredValue(quantity.code, round(float(value), 4), quantity.unit)
