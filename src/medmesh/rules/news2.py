"""NEWS2 (Royal College of Physicians, 2017) from device readings, as a *partial* score.

Devices measure five of NEWS2's seven parameters: respiration rate, SpO2, systolic blood
pressure, pulse and temperature. Consciousness and supplemental oxygen are unknown; they count
as "alert" and "air" (0 points), so the score is a lower bound of the bedside score. Each
parameter uses its latest reading no older than `news2_max_age_minutes`; with fewer than
`news2_min_parameters` of them there is no score.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from medmesh.domain.alerts import Severity
from medmesh.domain.care_plans import Thresholds
from medmesh.rules.outcomes import Cleared, Finding, Outcome, dedupe_key
from medmesh.rules.series import Point

RESPIRATION, SPO2, SYSTOLIC, PULSE, TEMPERATURE = (
    "respiration",
    "SpO2",
    "systolic BP",
    "pulse",
    "temperature",
)
CODES: Mapping[str, str] = {
    RESPIRATION: "9279-1",
    SPO2: "2708-6",
    SYSTOLIC: "8480-6",
    PULSE: "8867-4",
    TEMPERATURE: "8310-5",
}
NOT_FROM_DEVICES = ("consciousness", "supplemental oxygen")


def _whole(value: float) -> int:
    """Round half up: the chart's bands are whole numbers (91.5 % scores as 92 %)."""
    return math.floor(value + 0.5)


def respiration_score(per_minute: float) -> int:
    rate = _whole(per_minute)
    if rate <= 8:
        return 3
    if rate <= 11:
        return 1
    if rate <= 20:
        return 0
    if rate <= 24:
        return 2
    return 3


def spo2_scale1_score(percent: float) -> int:
    spo2 = _whole(percent)
    if spo2 <= 91:
        return 3
    if spo2 <= 93:
        return 2
    if spo2 <= 95:
        return 1
    return 0


def spo2_scale2_score(percent: float) -> int:
    """Scale 2 (target 88-92 %, hypercapnic respiratory failure), on air: 93 % and above on
    air scores 0; the higher bands apply on oxygen only, which devices cannot tell."""
    spo2 = _whole(percent)
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    return 0


def systolic_score(mm_hg: float) -> int:
    pressure = _whole(mm_hg)
    if pressure <= 90:
        return 3
    if pressure <= 100:
        return 2
    if pressure <= 110:
        return 1
    if pressure <= 219:
        return 0
    return 3


def pulse_score(per_minute: float) -> int:
    pulse = _whole(per_minute)
    if pulse <= 40:
        return 3
    if pulse <= 50:
        return 1
    if pulse <= 90:
        return 0
    if pulse <= 110:
        return 1
    if pulse <= 130:
        return 2
    return 3


def temperature_score(celsius: float) -> int:
    tenths = _whole(celsius * 10)  # the chart's bands are in tenths of a degree
    if tenths <= 350:
        return 3
    if tenths <= 360:
        return 1
    if tenths <= 380:
        return 0
    if tenths <= 390:
        return 1
    return 2


@dataclass(frozen=True, slots=True)
class News2:
    parts: Mapping[str, int]  # parameter → points, for the parameters measured

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def red(self) -> bool:
        """A single parameter scoring 3."""
        return any(points == 3 for points in self.parts.values())

    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in CODES if p not in self.parts) + NOT_FROM_DEVICES

    def severity(self, t: Thresholds) -> Severity | None:
        """RCP clinical risk: high (>= 7) critical, medium (5-6) urgent, a red score in one
        parameter warning; low: no alert."""
        if self.total >= t.news2_critical:
            return Severity.CRITICAL
        if self.total >= t.news2_urgent:
            return Severity.URGENT
        if self.red:
            return Severity.WARNING
        return None

    def describe(self) -> str:
        parts = ", ".join(f"{name} {points}" for name, points in self.parts.items())
        return f"Partial NEWS2 {self.total} ({parts}; not measured: {', '.join(self.missing())})"


def score(values: Mapping[str, float], spo2_scale: int = 1) -> News2:
    """NEWS2 points of the measured parameters (keys of CODES)."""
    scorers = {
        RESPIRATION: respiration_score,
        SPO2: spo2_scale2_score if spo2_scale == 2 else spo2_scale1_score,
        SYSTOLIC: systolic_score,
        PULSE: pulse_score,
        TEMPERATURE: temperature_score,
    }
    return News2({name: scorers[name](values[name]) for name in CODES if name in values})


def _latest(points: Sequence[Point], at: datetime, oldest: datetime) -> Point | None:
    """The last of `points` (in time order) at or before `at`, if not older than `oldest`: a
    binary search, so the recovery check's pass over its window is not quadratic."""
    index = bisect_right(points, at, key=_at)
    if index and points[index - 1].at >= oldest:
        return points[index - 1]
    return None


def _at(point: Point) -> datetime:
    return point.at


def score_at(
    inputs: Mapping[str, Sequence[Point]], at: datetime, t: Thresholds
) -> tuple[News2, Point] | None:
    """The partial NEWS2 at `at` from the latest recent reading of each parameter, with the
    newest reading used; None with too few recent parameters."""
    oldest = at - t.minutes("news2_max_age_minutes")
    latest = {
        name: point
        for name, points in inputs.items()
        if (point := _latest(points, at, oldest)) is not None
    }
    if not latest or len(latest) < t.news2_min_parameters:
        return None
    news = score({name: p.value for name, p in latest.items()}, int(t.news2_spo2_scale))
    return news, max(latest.values(), key=lambda p: p.at)


def evaluate(
    patient_id: str, inputs: Mapping[str, Sequence[Point]], t: Thresholds
) -> Outcome | None:
    """Trigger on the score at the newest reading; clear when the score stayed below every
    alert level at each reading of the last `news2_recover_minutes` and at its start."""
    newest_each = [points[-1].at for points in inputs.values() if points]  # each in time order
    if not newest_each:
        return None
    now = max(newest_each)
    key = dedupe_key("news2", patient_id)
    current = score_at(inputs, now, t)
    if current is None:
        return None
    news, newest = current
    severity = news.severity(t)
    if severity is not None:
        title = f"NEWS2 {news.total} (partial)"
        return Finding(
            "news2",
            key,
            severity,
            title,
            news.describe(),
            now,
            newest.device_id,
            newest.observation_id,
        )
    start = now - t.minutes("news2_recover_minutes")
    # The reading times after `start` only: the window before it does not decide.
    later = {
        p.at for points in inputs.values() for p in points[bisect_right(points, start, key=_at) :]
    }
    for moment in [start, *sorted(later)]:
        earlier = score_at(inputs, moment, t)
        if earlier is None or earlier[0].severity(t) is not None:
            return None
    return Cleared(key)
