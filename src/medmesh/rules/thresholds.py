"""Threshold rules: a value beyond a level, for a sustained time where one reading proves
little (SpO2, heart rate), on one reading where each is deliberate (glucose, blood pressure).

Hysteresis: a rule triggers beyond its level and clears only back past a separate clear level
(for a recovery time where it triggers on a sustained time), so a value hovering at the level
keeps one alert open instead of opening and resolving one again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from medmesh.domain.alerts import Severity
from medmesh.domain.care_plans import Thresholds
from medmesh.rules.outcomes import Cleared, Finding, Outcome, dedupe_key, duration, number
from medmesh.rules.series import Point, lasts, trailing_run

SPO2 = ("2708-6",)
HEART_RATE = ("8867-4",)
GLUCOSE = ("41653-7", "99504-3")  # capillary (glucometer) and interstitial (CGM)
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
BLOOD_PRESSURE = "85354-9"


@dataclass(frozen=True, slots=True)
class LevelRule:
    """Trigger while values are `direction` a level for `sustain`; the most severe level whose
    run lasts `sustain` sets the severity. Clear once values are back at or past `clear` for
    `recover`."""

    rule: str
    title: str
    quantity: str  # as the detail names it, e.g. "SpO2"
    unit: str
    direction: Literal["below", "above"]
    levels: tuple[tuple[float, Severity], ...]  # mildest first
    clear: float
    sustain: timedelta = timedelta(0)
    recover: timedelta = timedelta(0)

    def beyond(self, level: float) -> Callable[[float], bool]:
        if self.direction == "below":
            return lambda value: value < level
        return lambda value: value > level

    def evaluate(self, patient_id: str, points: Sequence[Point]) -> Outcome | None:
        if not points:
            return None
        key = dedupe_key(self.rule, patient_id)
        # The most severe level whose run lasts `sustain`; only its run is read whole (for the
        # detail), the others only as far back as deciding takes.
        for level, severity in reversed(self.levels):
            beyond = self.beyond(level)
            if not lasts(points, beyond, self.sustain):
                continue
            run = trailing_run(points, beyond)
            return Finding(
                self.rule,
                key,
                severity,
                self.title,
                self._detail(run),
                run[-1].at,
                run[-1].device_id,
                run[-1].observation_id,
            )
        short_of_clear = self.beyond(self.clear)
        recovered = lasts(points, lambda value: not short_of_clear(value), self.recover)
        return Cleared(key) if recovered else None

    def _detail(self, run: Sequence[Point]) -> str:
        level = self.levels[0][0]
        latest = f"{number(run[-1].value)} {self.unit}"
        if self.sustain <= timedelta(0):
            return f"{self.quantity} {latest}, {self.direction} {number(level)} {self.unit}"
        minutes = (run[-1].at - run[0].at).total_seconds() / 60
        return (
            f"{self.quantity} {self.direction} {number(level)} {self.unit} for "
            f"{duration(minutes)} ({len(run)} readings, latest {latest})"
        )


def level_rules(t: Thresholds) -> dict[tuple[str, ...], list[LevelRule]]:
    """The single-quantity rules, by the codes they read."""
    spo2_sustain, spo2_recover = (
        t.minutes("spo2_sustain_minutes"),
        t.minutes("spo2_recover_minutes"),
    )
    hr_sustain = t.minutes("heart_rate_sustain_minutes")
    hr_recover = t.minutes("heart_rate_recover_minutes")
    return {
        SPO2: [
            LevelRule(
                "spo2-low",
                "Low oxygen saturation",
                "SpO2",
                "%",
                "below",
                ((t.spo2_low, Severity.URGENT), (t.spo2_critical, Severity.CRITICAL)),
                t.spo2_clear,
                spo2_sustain,
                spo2_recover,
            )
        ],
        HEART_RATE: [
            LevelRule(
                "heart-rate-low",
                "Low heart rate",
                "Heart rate",
                "/min",
                "below",
                ((t.heart_rate_low, Severity.URGENT),),
                t.heart_rate_low_clear,
                hr_sustain,
                hr_recover,
            ),
            LevelRule(
                "heart-rate-high",
                "High heart rate",
                "Heart rate",
                "/min",
                "above",
                ((t.heart_rate_high, Severity.URGENT),),
                t.heart_rate_high_clear,
                hr_sustain,
                hr_recover,
            ),
        ],
        GLUCOSE: [
            LevelRule(
                "glucose-low",
                "Low glucose",
                "Glucose",
                "mg/dL",
                "below",
                ((t.glucose_low, Severity.WARNING), (t.glucose_urgent_low, Severity.CRITICAL)),
                t.glucose_low_clear,
            ),
            LevelRule(
                "glucose-high",
                "High glucose",
                "Glucose",
                "mg/dL",
                "above",
                ((t.glucose_high, Severity.WARNING),),
                t.glucose_high_clear,
            ),
        ],
    }


def hypertensive_crisis(
    patient_id: str, systolic: Sequence[Point], diastolic: Sequence[Point], t: Thresholds
) -> Outcome | None:
    """One blood pressure reading above the crisis levels (either component) triggers; the
    next reading at or under both clear levels clears."""
    if not systolic or not diastolic:
        return None
    sys, dia = systolic[-1], diastolic[-1]
    if sys.observation_id != dia.observation_id:
        return None  # a reading without both components: judge none on half a panel
    key = dedupe_key("bp-crisis", patient_id)
    if sys.value > t.systolic_crisis or dia.value > t.diastolic_crisis:
        detail = (
            f"Blood pressure {number(sys.value)}/{number(dia.value)} mmHg, above "
            f"{number(t.systolic_crisis)}/{number(t.diastolic_crisis)} mmHg"
        )
        return Finding(
            "bp-crisis",
            key,
            Severity.URGENT,
            "Hypertensive crisis range",
            detail,
            sys.at,
            sys.device_id,
            sys.observation_id,
        )
    if sys.value <= t.systolic_clear and dia.value <= t.diastolic_clear:
        return Cleared(key)
    return None
