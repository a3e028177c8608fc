"""Every rule that runs on committed readings: which observation codes wake it, which it reads,
and how far back."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import timedelta

from medmesh.domain.care_plans import Thresholds
from medmesh.rules import news2, trends
from medmesh.rules.outcomes import Outcome
from medmesh.rules.series import Point, series
from medmesh.rules.thresholds import (
    BLOOD_PRESSURE,
    DIASTOLIC,
    GLUCOSE,
    HEART_RATE,
    SPO2,
    SYSTOLIC,
    hypertensive_crisis,
    level_rules,
)
from medmesh.store.observations import StoredObservation

# NEWS2's inputs as stored observation codes (systolic pressure comes in the BP panel).
NEWS2_CODES = ("9279-1", "2708-6", BLOOD_PRESSURE, "8867-4", "8310-5")


def _inputs(t: Thresholds) -> list[tuple[str, ...]]:
    return [*level_rules(t), (BLOOD_PRESSURE,), trends.CGM, NEWS2_CODES]


# Every observation code any rule reads (what a patient's rule state keeps).
RULE_CODES = frozenset((*SPO2, *HEART_RATE, *GLUCOSE, BLOOD_PRESSURE, *trends.CGM, *NEWS2_CODES))


def codes_to_read(batch_codes: Collection[str], t: Thresholds) -> tuple[str, ...]:
    """The codes the rules woken by a batch of these codes read."""
    wanted: dict[str, None] = {}
    for codes in _inputs(t):
        if set(codes) & set(batch_codes):
            wanted.update(dict.fromkeys(codes))
    return tuple(wanted)


def lookback(t: Thresholds) -> timedelta:
    """How much history the rules need before the newest reading."""
    spans = [
        t.minutes("spo2_sustain_minutes"),
        t.minutes("spo2_recover_minutes"),
        t.minutes("heart_rate_sustain_minutes"),
        t.minutes("heart_rate_recover_minutes"),
        t.minutes("glucose_trend_minutes"),
        t.minutes("news2_max_age_minutes") + t.minutes("news2_recover_minutes"),
    ]
    return max(spans) + timedelta(minutes=1)


SeriesOf = Callable[[Sequence[str]], list[Point]]


def evaluate(
    patient_id: str,
    series_of: SeriesOf,
    batch_codes: Collection[str],
    t: Thresholds,
) -> list[Outcome]:
    """Outcomes of the rules the batch's codes wake, judged at the newest reading of each.

    `series_of(codes)`: the points of those codes (a panel's component codes included) in the
    rules' window, in time order, as `series` makes them from the stored history.
    """
    woken = set(batch_codes)
    found: list[Outcome | None] = []
    for codes, rules in level_rules(t).items():
        if woken & set(codes):
            points = series_of(codes)
            found += [rule.evaluate(patient_id, points) for rule in rules]
    if BLOOD_PRESSURE in woken:
        found.append(
            hypertensive_crisis(patient_id, series_of([SYSTOLIC]), series_of([DIASTOLIC]), t)
        )
    if woken & set(trends.CGM):
        found.append(trends.glucose_falling(patient_id, series_of(trends.CGM), t))
    if woken & set(NEWS2_CODES):
        inputs = {name: series_of([code]) for name, code in news2.CODES.items()}
        found.append(news2.evaluate(patient_id, inputs, t))
    return [outcome for outcome in found if outcome is not None]


def from_history(history: Sequence[StoredObservation]) -> SeriesOf:
    """`series_of` over observations read from the store."""
    return lambda codes: series(history, codes)
