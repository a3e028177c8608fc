"""The measurement vocabulary: LOINC codes and UCUM units of the FHIR R4 vital-signs profiles."""

from __future__ import annotations

import pytest

from medmesh.domain.validation import resolve_measure
from medmesh.domain.vocabulary import (
    MEASURES,
    Category,
    Measure,
    Quantity,
    measure_by_code,
    measure_by_key,
    quantity_by_code,
)

ALL_QUANTITIES: list[Quantity] = [
    q for m in MEASURES for q in ((m.quantity,) if m.quantity else m.components)
]


@pytest.mark.parametrize(
    ("key", "code", "unit", "category"),
    [
        ("heart-rate", "8867-4", "/min", Category.VITAL_SIGNS),
        ("respiratory-rate", "9279-1", "/min", Category.VITAL_SIGNS),
        ("oxygen-saturation", "2708-6", "%", Category.VITAL_SIGNS),
        ("body-temperature", "8310-5", "Cel", Category.VITAL_SIGNS),
        ("body-weight", "29463-7", "kg", Category.VITAL_SIGNS),
        ("blood-glucose", "41653-7", "mg/dL", Category.LABORATORY),
        ("cgm-glucose", "99504-3", "mg/dL", Category.LABORATORY),
        ("steps", "55423-8", "{steps}", Category.ACTIVITY),
    ],
)
def test_single_measures_use_the_profile_loinc_code_and_ucum_unit(
    key: str, code: str, unit: str, category: Category
) -> None:
    measure = measure_by_key(key)
    assert measure is not None
    assert measure.code == code
    assert measure.category == category
    assert not measure.is_panel
    assert measure.quantity is not None
    assert (measure.quantity.code, measure.quantity.unit) == (code, unit)


def test_blood_pressure_is_the_panel_with_systolic_and_diastolic_in_mm_hg() -> None:
    measure = measure_by_key("blood-pressure")
    assert measure is not None
    assert measure.code == "85354-9"
    assert measure.category == Category.VITAL_SIGNS
    assert measure.is_panel and measure.quantity is None
    assert [(c.key, c.code, c.unit) for c in measure.components] == [
        ("systolic", "8480-6", "mm[Hg]"),
        ("diastolic", "8462-4", "mm[Hg]"),
    ]


def test_only_blood_pressure_is_a_panel() -> None:
    assert [m.key for m in MEASURES if m.is_panel] == ["blood-pressure"]


def test_pulse_oximetry_code_is_accepted_as_oxygen_saturation() -> None:
    spo2 = measure_by_key("oxygen-saturation")
    assert spo2 is not None
    assert spo2.also_codes == ("59408-5",)
    assert measure_by_code("59408-5") is spo2
    assert measure_by_code("2708-6") is spo2


@pytest.mark.parametrize("measure", MEASURES, ids=lambda m: m.key)
def test_each_measure_is_found_by_its_key_and_its_code(measure: Measure) -> None:
    assert measure_by_key(measure.key) is measure
    assert measure_by_code(measure.code) is measure
    assert resolve_measure(measure.key) is measure
    assert resolve_measure(measure.code) is measure


@pytest.mark.parametrize("quantity", ALL_QUANTITIES, ids=lambda q: q.key)
def test_every_plausible_range_is_a_real_interval(quantity: Quantity) -> None:
    assert quantity.low < quantity.high
    assert quantity.is_plausible(quantity.low)
    assert quantity.is_plausible(quantity.high)
    assert not quantity.is_plausible(quantity.high + 1)


def test_keys_and_codes_are_unique_so_look_ups_are_unambiguous() -> None:
    keys = [m.key for m in MEASURES]
    codes = [c for m in MEASURES for c in (m.code, *m.also_codes)]
    codes += [c.code for m in MEASURES for c in m.components]
    assert len(keys) == len(set(keys))
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("code", "key"),
    [("8480-6", "systolic"), ("8462-4", "diastolic"), ("8867-4", "heart-rate")],
)
def test_quantities_are_found_by_code_including_panel_components(code: str, key: str) -> None:
    quantity = quantity_by_code(code)
    assert quantity is not None
    assert quantity.key == key


def test_spo2_alternative_code_finds_the_stored_quantity() -> None:
    quantity = quantity_by_code("59408-5")
    assert quantity is not None
    assert quantity.code == "2708-6"


def test_a_panel_code_is_not_a_single_quantity() -> None:
    assert quantity_by_code("85354-9") is None


@pytest.mark.parametrize("name", ["blood-alcohol", "HEART-RATE", "8867", "8867-4 ", "", "8480-6"])
def test_unknown_names_find_no_measure(name: str) -> None:
    assert measure_by_key(name) is None
    assert measure_by_code(name) is None
