"""Rate of change: CGM glucose falling fast."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from medmesh.domain.alerts import Severity
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.outcomes import Cleared, Finding
from medmesh.rules.series import Point
from medmesh.rules.trends import glucose_falling, slope_per_minute

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def cgm(values: Sequence[float]) -> list[Point]:
    """One CGM reading every 5 minutes."""
    return [Point(T0 + timedelta(minutes=5 * i), v, f"g-{i}", "cgm") for i, v in enumerate(values)]


def test_the_slope_is_in_units_per_minute() -> None:
    assert slope_per_minute(cgm([150, 140, 130, 120])) == pytest.approx(-2.0)


def test_glucose_falling_faster_than_2_per_minute_raises_a_warning() -> None:
    found = glucose_falling("p", cgm([180, 165, 150, 135]), DEFAULT_THRESHOLDS)
    assert isinstance(found, Finding)
    assert found.severity is Severity.WARNING and found.rule == "glucose-falling"
    assert found.detail == "Glucose falling 3 mg/dL/min over 15 min (latest 135 mg/dL)"


def test_only_the_last_fifteen_minutes_count() -> None:
    # A fast fall that ended 20 minutes ago, steady since.
    assert isinstance(
        glucose_falling("p", cgm([200, 150, 110, 110, 110, 110]), DEFAULT_THRESHOLDS), Cleared
    )


def test_a_moderate_fall_is_in_the_dead_band() -> None:
    assert glucose_falling("p", cgm([150, 142, 134, 126]), DEFAULT_THRESHOLDS) is None  # -1.6


def test_steady_or_rising_glucose_clears() -> None:
    assert isinstance(glucose_falling("p", cgm([100, 104, 109, 115]), DEFAULT_THRESHOLDS), Cleared)


def test_too_few_readings_say_nothing() -> None:
    assert glucose_falling("p", cgm([180, 150]), DEFAULT_THRESHOLDS) is None
