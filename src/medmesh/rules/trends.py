"""Rate-of-change rules: CGM glucose falling fast, before it is low.

The rate is the least-squares slope of the readings in the trend window (default 15 min), as
CGM trend arrows summarise the last 15-20 minutes; a slope is less jumpy than the difference
between two noisy readings.
"""

from __future__ import annotations

from collections.abc import Sequence

from medmesh.domain.alerts import Severity
from medmesh.domain.care_plans import Thresholds
from medmesh.rules.outcomes import Cleared, Finding, Outcome, dedupe_key, number
from medmesh.rules.series import Point

CGM = ("99504-3",)
MIN_POINTS = 3


def slope_per_minute(points: Sequence[Point]) -> float:
    """Least-squares slope of value over time, in units per minute."""
    origin = points[0].at
    xs = [(p.at - origin).total_seconds() / 60 for p in points]
    ys = [p.value for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def glucose_falling(patient_id: str, points: Sequence[Point], t: Thresholds) -> Outcome | None:
    """Trigger when glucose falls faster than `glucose_fall_rate` mg/dL/min over the window
    (at least 3 readings covering two thirds of it); clear once it falls slower than
    `glucose_fall_clear` (or rises)."""
    if not points:
        return None
    window = t.minutes("glucose_trend_minutes")
    newest = points[-1]
    recent = [p for p in points if p.at >= newest.at - window]
    if len(recent) < MIN_POINTS or newest.at - recent[0].at < window * 2 / 3:
        return None
    slope = slope_per_minute(recent)
    key = dedupe_key("glucose-falling", patient_id)
    if slope < -t.glucose_fall_rate:
        detail = (
            f"Glucose falling {number(round(-slope, 1))} mg/dL/min over "
            f"{round((newest.at - recent[0].at).total_seconds() / 60)} min "
            f"(latest {number(newest.value)} mg/dL)"
        )
        return Finding(
            "glucose-falling",
            key,
            Severity.WARNING,
            "Glucose falling fast",
            detail,
            newest.at,
            newest.device_id,
            newest.observation_id,
        )
    if slope >= -t.glucose_fall_clear:
        return Cleared(key)
    return None
