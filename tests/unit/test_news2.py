"""NEWS2 scoring (RCP 2017 chart 1) and the partial-NEWS2 rule built on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from medmesh.domain.alerts import Severity
from medmesh.rules import news2
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.outcomes import Cleared, Finding
from medmesh.rules.series import Point

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rate", "points"),
    [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (40, 3)],
)
def test_respiration_rate_scores_by_the_chart(rate: float, points: int) -> None:
    assert news2.respiration_score(rate) == points


@pytest.mark.parametrize(
    ("spo2", "points"), [(85, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
)
def test_spo2_scale_1_scores_by_the_chart(spo2: float, points: int) -> None:
    assert news2.spo2_scale1_score(spo2) == points


@pytest.mark.parametrize(
    ("spo2", "points"), [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (99, 0)]
)
def test_spo2_scale_2_scores_by_the_chart_on_air(spo2: float, points: int) -> None:
    assert news2.spo2_scale2_score(spo2) == points


@pytest.mark.parametrize(
    ("systolic", "points"),
    [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_pressure_scores_by_the_chart(systolic: float, points: int) -> None:
    assert news2.systolic_score(systolic) == points


@pytest.mark.parametrize(
    ("pulse", "points"),
    [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)],
)
def test_pulse_scores_by_the_chart(pulse: float, points: int) -> None:
    assert news2.pulse_score(pulse) == points


@pytest.mark.parametrize(
    ("celsius", "points"),
    [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)],
)
def test_temperature_scores_by_the_chart(celsius: float, points: int) -> None:
    assert news2.temperature_score(celsius) == points


def test_values_between_the_chart_s_whole_numbers_round_half_up() -> None:
    assert news2.spo2_scale1_score(91.4) == 3
    assert news2.spo2_scale1_score(91.5) == 2
    assert news2.temperature_score(35.04) == 3
    assert news2.temperature_score(35.05) == 1


def test_the_aggregate_sums_the_measured_parameters_and_names_the_missing_ones() -> None:
    score = news2.score({"respiration": 22, "SpO2": 93, "pulse": 105, "temperature": 38.5})
    assert score.total == 2 + 2 + 1 + 1
    assert not score.red
    assert score.missing() == ("systolic BP", "consciousness", "supplemental oxygen")
    assert score.describe().startswith("Partial NEWS2 6 (")


@pytest.mark.parametrize(
    ("values", "severity"),
    [
        ({"respiration": 16, "SpO2": 97, "pulse": 70}, None),
        ({"respiration": 16, "SpO2": 91, "pulse": 70}, Severity.WARNING),  # one red score
        ({"respiration": 22, "SpO2": 93, "pulse": 95}, Severity.URGENT),  # 5
        ({"respiration": 25, "SpO2": 93, "pulse": 115}, Severity.CRITICAL),  # 7
    ],
)
def test_the_clinical_risk_band_sets_the_severity(
    values: dict[str, float], severity: Severity | None
) -> None:
    assert news2.score(values).severity(DEFAULT_THRESHOLDS) is severity


def test_a_copd_care_plan_can_score_spo2_on_scale_2() -> None:
    assert news2.score({"SpO2": 89}, spo2_scale=2).total == 0
    assert news2.score({"SpO2": 89}, spo2_scale=1).total == 3


def _inputs(minutes: int, **values: float) -> dict[str, list[Point]]:
    """The same value every minute for `minutes` minutes, per parameter."""
    return {
        name: [
            Point(T0 + timedelta(minutes=m), value, f"{name}-{m}", "dev") for m in range(minutes)
        ]
        for name, value in values.items()
    }


def test_no_score_with_fewer_recent_parameters_than_required() -> None:
    assert news2.evaluate("p", _inputs(5, SpO2=85, pulse=140), DEFAULT_THRESHOLDS) is None
    assert news2.evaluate("p", _inputs(5, SpO2=85, pulse=140, respiration=16), DEFAULT_THRESHOLDS)


def test_readings_older_than_the_maximum_age_do_not_count() -> None:
    inputs = _inputs(1, respiration=30, pulse=140)
    inputs["SpO2"] = [Point(T0 + timedelta(hours=2), 97, "late", "dev")]
    assert news2.evaluate("p", inputs, DEFAULT_THRESHOLDS) is None


def test_a_high_aggregate_raises_a_critical_finding_at_the_newest_reading() -> None:
    inputs = _inputs(3, respiration=26, SpO2=93, pulse=115)
    found = news2.evaluate("p", inputs, DEFAULT_THRESHOLDS)
    assert isinstance(found, Finding)
    assert found.severity is Severity.CRITICAL
    assert found.title == "NEWS2 7 (partial)"
    assert found.at == T0 + timedelta(minutes=2)
    assert found.dedupe_key == "news2:p"


def test_the_score_clears_only_after_staying_low_for_the_recovery_time() -> None:
    high = _inputs(30, respiration=16, SpO2=97, pulse=70)
    high["SpO2"][10] = Point(high["SpO2"][10].at, 90, "dip", "dev")  # red at minute 10
    assert news2.evaluate("p", {k: v[:20] for k, v in high.items()}, DEFAULT_THRESHOLDS) is None
    assert isinstance(news2.evaluate("p", high, DEFAULT_THRESHOLDS), Cleared)
