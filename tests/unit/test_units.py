"""Unit conversion into each measurement's canonical UCUM unit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain.errors import UnitNotConvertible
from medmesh.domain.units import CONVERSIONS, UNIT_ALIASES, UnitConversion, convert, normalize_unit

# Magnitudes a device could plausibly send, with room on both sides (and negative temperatures).
finite_values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
conversions = st.sampled_from(CONVERSIONS)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize(
    ("value", "unit", "to_unit", "expected"),
    [
        (98.6, "[degF]", "Cel", 37.0),
        (32, "[degF]", "Cel", 0.0),
        (212, "[degF]", "Cel", 100.0),
        (-40, "[degF]", "Cel", -40.0),
        (5.5, "mmol/L", "mg/dL", 99.0858),
        (100, "mg/dL", "mmol/L", 5.5508),
        (154, "[lb_av]", "kg", 69.8532),
        (1500, "g", "kg", 1.5),
        (16, "kPa", "mm[Hg]", 120.0099),
        (0.97, "1", "%", 97.0),
    ],
)
def test_known_conversions_give_the_textbook_value(
    value: float, unit: str, to_unit: str, expected: float
) -> None:
    assert convert(value, unit, to_unit) == pytest.approx(expected, abs=1e-4)


def test_fahrenheit_body_temperature_is_stored_as_celsius() -> None:
    assert round(convert(98.6, "[degF]", "Cel"), 4) == 37.0


@pytest.mark.parametrize(
    ("spelling", "ucum"),
    [
        ("bpm", "/min"),
        ("BPM", "/min"),
        ("beats/min", "/min"),
        ("breaths/min", "/min"),
        ("mmHg", "mm[Hg]"),
        ("mg/dl", "mg/dL"),
        ("mmol/l", "mmol/L"),
        ("°F", "[degF]"),
        ("°C", "Cel"),
        ("F", "[degF]"),
        ("celsius", "Cel"),
        ("lbs", "[lb_av]"),
        ("lb", "[lb_av]"),
        ("steps", "{steps}"),
        ("percent", "%"),
        ("  bpm  ", "/min"),
    ],
)
def test_device_spellings_are_read_as_their_ucum_unit(spelling: str, ucum: str) -> None:
    assert normalize_unit(spelling) == ucum


@pytest.mark.parametrize("ucum", ["/min", "mm[Hg]", "mg/dL", "Cel", "[degF]", "kg", "%", "{steps}"])
def test_exact_ucum_codes_pass_through_unchanged(ucum: str) -> None:
    assert normalize_unit(ucum) == ucum


@pytest.mark.parametrize(
    ("value", "unit", "to_unit", "expected"),
    [
        (72, "bpm", "/min", 72),
        (99.5, "°F", "Cel", 37.5),
        (110, "mg/dl", "mg/dL", 110),
        (6.1, "mmol/l", "mg/dL", 109.8952),
        (150, "lbs", "kg", 68.0389),
        (120, "mmHg", "mm[Hg]", 120),
    ],
)
def test_aliases_convert_like_their_ucum_unit(
    value: float, unit: str, to_unit: str, expected: float
) -> None:
    assert convert(value, unit, to_unit) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("unit", "to_unit"),
    [
        ("kg", "/min"),
        ("mmol/L", "kg"),
        ("[degF]", "mg/dL"),
        ("furlongs", "kg"),
        ("", "Cel"),
        ("mm[Hg]", "Cel"),
    ],
)
def test_a_unit_of_another_kind_cannot_be_converted(unit: str, to_unit: str) -> None:
    with pytest.raises(UnitNotConvertible):
        convert(72, unit, to_unit)


def test_the_not_convertible_error_names_the_units_but_not_the_value() -> None:
    with pytest.raises(UnitNotConvertible) as caught:
        convert(123.456, "furlongs", "kg")
    message = str(caught.value)
    assert "furlongs" in message and "kg" in message
    assert "123" not in message


@given(conversion=conversions, value=finite_values)
def test_every_conversion_round_trips_through_its_inverse(
    conversion: UnitConversion, value: float
) -> None:
    there = convert(value, conversion.from_unit, conversion.to_unit)
    back = convert(there, conversion.to_unit, conversion.from_unit)
    assert _close(back, value)


@given(conversion=conversions, value=finite_values)
def test_every_conversion_round_trips_from_the_canonical_side(
    conversion: UnitConversion, value: float
) -> None:
    there = convert(value, conversion.to_unit, conversion.from_unit)
    back = convert(there, conversion.from_unit, conversion.to_unit)
    assert _close(back, value)


@given(conversion=conversions, low=finite_values, high=finite_values)
def test_conversions_keep_readings_in_order(
    conversion: UnitConversion, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    assert convert(low, conversion.from_unit, conversion.to_unit) <= convert(
        high, conversion.from_unit, conversion.to_unit
    )


@given(unit=st.sampled_from(sorted(UNIT_ALIASES)), value=finite_values)
def test_an_alias_converts_exactly_like_the_unit_it_stands_for(unit: str, value: float) -> None:
    ucum = UNIT_ALIASES[unit]
    assert normalize_unit(unit.upper()) == ucum
    assert convert(value, unit, ucum) == value


@given(
    unit=st.sampled_from(
        sorted({c.from_unit for c in CONVERSIONS} | {c.to_unit for c in CONVERSIONS})
    ),
    value=finite_values,
)
def test_converting_to_the_same_unit_leaves_the_value_alone(unit: str, value: float) -> None:
    assert convert(value, unit, unit) == value
