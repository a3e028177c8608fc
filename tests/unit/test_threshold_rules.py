"""Threshold rules and their hysteresis, on plain series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from medmesh.domain.alerts import Severity
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.outcomes import Cleared, Finding, Outcome
from medmesh.rules.series import Point
from medmesh.rules.thresholds import GLUCOSE, HEART_RATE, SPO2, hypertensive_crisis, level_rules

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RULES = level_rules(DEFAULT_THRESHOLDS)
SPO2_LOW = RULES[SPO2][0]
HR_LOW, HR_HIGH = RULES[HEART_RATE]
GLUCOSE_LOW, GLUCOSE_HIGH = RULES[GLUCOSE]


def minutely(values: Sequence[float], every: int = 1) -> list[Point]:
    return [
        Point(T0 + timedelta(minutes=i * every), v, f"obs-{i}", "dev") for i, v in enumerate(values)
    ]


def test_one_low_spo2_reading_is_not_a_sustained_desaturation() -> None:
    assert SPO2_LOW.evaluate("p", minutely([96, 96, 84])) is None


def test_spo2_below_90_for_five_minutes_raises_an_urgent_finding() -> None:
    found = SPO2_LOW.evaluate("p", minutely([95, 89, 88, 89, 87, 88, 89]))
    assert isinstance(found, Finding)
    assert (found.rule, found.severity, found.dedupe_key) == (
        "spo2-low",
        Severity.URGENT,
        "spo2-low:p",
    )
    assert found.observation_id == "obs-6" and found.at == T0 + timedelta(minutes=6)
    assert found.detail == "SpO2 below 90 % for 5 min (6 readings, latest 89 %)"


def test_spo2_four_minutes_below_is_not_yet_sustained() -> None:
    assert SPO2_LOW.evaluate("p", minutely([95, 89, 88, 89, 87, 88])) is None


def test_spo2_sustained_below_85_is_critical() -> None:
    found = SPO2_LOW.evaluate("p", minutely([89, 84, 83, 84, 82, 84, 83]))
    assert isinstance(found, Finding) and found.severity is Severity.CRITICAL


def test_spo2_two_readings_five_minutes_apart_are_enough() -> None:
    assert isinstance(SPO2_LOW.evaluate("p", minutely([88, 88], every=5)), Finding)


def test_spo2_clears_only_after_ten_minutes_at_or_above_92() -> None:
    low = [88] * 6
    assert SPO2_LOW.evaluate("p", minutely([*low, *[92] * 10])) is None
    assert isinstance(SPO2_LOW.evaluate("p", minutely([*low, *[92] * 11])), Cleared)


def test_spo2_hovering_around_90_never_clears_and_keeps_finding() -> None:
    hovering = [89, 90, 91, 89, 90, 91] * 5
    outcomes = [SPO2_LOW.evaluate("p", minutely(hovering[: n + 1])) for n in range(len(hovering))]
    assert not any(isinstance(o, Cleared) for o in outcomes)
    # 89 alternates with 90 and 91: never five minutes in a row below 90, so no finding either.
    assert all(o is None for o in outcomes)


def test_spo2_hovering_at_89_to_91_after_an_episode_keeps_the_alert_open() -> None:
    values = [*[87] * 6, *[89, 90, 91] * 8]
    outcomes = [SPO2_LOW.evaluate("p", minutely(values[: n + 1])) for n in range(len(values))]
    assert isinstance(outcomes[5], Finding)
    assert not any(isinstance(o, Cleared) for o in outcomes)


def test_glucose_below_70_is_a_warning_and_below_54_critical() -> None:
    low = GLUCOSE_LOW.evaluate("p", minutely([110, 65], every=5))
    urgent = GLUCOSE_LOW.evaluate("p", minutely([110, 50], every=5))
    assert isinstance(low, Finding) and low.severity is Severity.WARNING
    assert isinstance(urgent, Finding) and urgent.severity is Severity.CRITICAL
    assert urgent.detail == "Glucose 50 mg/dL, below 70 mg/dL"


def test_glucose_exactly_70_is_not_low() -> None:
    assert GLUCOSE_LOW.evaluate("p", minutely([70])) is None


def test_glucose_low_clears_at_80_not_in_the_dead_band() -> None:
    assert GLUCOSE_LOW.evaluate("p", minutely([60, 75])) is None
    assert isinstance(GLUCOSE_LOW.evaluate("p", minutely([60, 80])), Cleared)


def test_glucose_above_250_is_high_and_clears_at_230() -> None:
    assert isinstance(GLUCOSE_HIGH.evaluate("p", minutely([251])), Finding)
    assert GLUCOSE_HIGH.evaluate("p", minutely([251, 240])) is None
    assert isinstance(GLUCOSE_HIGH.evaluate("p", minutely([251, 230])), Cleared)


def test_heart_rate_outside_40_to_130_for_five_minutes_is_urgent() -> None:
    high = HR_HIGH.evaluate("p", minutely([135] * 6))
    low = HR_LOW.evaluate("p", minutely([38] * 6))
    assert isinstance(high, Finding) and high.severity is Severity.URGENT
    assert isinstance(low, Finding) and low.rule == "heart-rate-low"
    assert HR_HIGH.evaluate("p", minutely([130] * 6)) is None


def test_an_empty_series_says_nothing() -> None:
    assert SPO2_LOW.evaluate("p", []) is None


def bp(systolic: float, diastolic: float, minute: int = 0) -> tuple[list[Point], list[Point]]:
    at = T0 + timedelta(minutes=minute)
    return [Point(at, systolic, f"bp-{minute}", "cuff")], [
        Point(at, diastolic, f"bp-{minute}", "cuff")
    ]


def crisis(systolic: float, diastolic: float) -> Outcome | None:
    return hypertensive_crisis("p", *bp(systolic, diastolic), DEFAULT_THRESHOLDS)


def test_blood_pressure_above_180_or_above_120_is_a_hypertensive_crisis() -> None:
    for reading in ((181, 90), (150, 121)):
        found = crisis(*reading)
        assert isinstance(found, Finding)
        assert found.severity is Severity.URGENT and found.rule == "bp-crisis"
    assert crisis(180, 120) is None  # the guideline's levels are "higher than"


def test_blood_pressure_crisis_clears_at_or_under_160_over_100() -> None:
    assert isinstance(crisis(160, 100), Cleared)
    assert crisis(165, 95) is None


def test_a_panel_missing_a_component_is_not_judged() -> None:
    systolic, _ = bp(200, 0, minute=5)
    _, diastolic = bp(0, 80, minute=0)
    assert hypertensive_crisis("p", systolic, diastolic, DEFAULT_THRESHOLDS) is None
