"""The threshold rules and NEWS2 read back only as far as deciding takes (`series.lasts`, the
recovery window of NEWS2): on random series they decide exactly as the whole-window
definitions they replaced, kept here as the oracle."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from medmesh.rules import news2
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.outcomes import Cleared, Finding, Outcome, dedupe_key
from medmesh.rules.series import Point, lasts, trailing_run
from medmesh.rules.thresholds import LevelRule, level_rules

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RULES = [rule for rules in level_rules(DEFAULT_THRESHOLDS).values() for rule in rules]


# --- the whole-window definitions, as they were -------------------------------------------------


def _spans(run: Sequence[Point], at_least: timedelta) -> bool:
    if not run:
        return False
    if at_least <= timedelta(0):
        return True
    return len(run) >= 2 and run[-1].at - run[0].at >= at_least


def _level_rule_whole(rule: LevelRule, patient_id: str, points: Sequence[Point]) -> Outcome | None:
    if not points:
        return None
    key = dedupe_key(rule.rule, patient_id)
    met = [
        (severity, run)
        for level, severity in rule.levels
        if _spans(run := trailing_run(points, rule.beyond(level)), rule.sustain)
    ]
    if met:
        severity, run = met[-1]
        return Finding(
            rule.rule,
            key,
            severity,
            rule.title,
            rule._detail(run),
            run[-1].at,
            run[-1].device_id,
            run[-1].observation_id,
        )
    short_of_clear = rule.beyond(rule.clear)
    recovered = trailing_run(points, lambda value: not short_of_clear(value))
    return Cleared(key) if _spans(recovered, rule.recover) else None


def _news2_whole(patient_id: str, inputs: Mapping[str, Sequence[Point]]) -> Outcome | None:
    t = DEFAULT_THRESHOLDS
    times = sorted({p.at for points in inputs.values() for p in points})
    if not times:
        return None
    now = times[-1]
    key = dedupe_key("news2", patient_id)
    current = news2.score_at(inputs, now, t)
    if current is None:
        return None
    news, newest = current
    severity = news.severity(t)
    if severity is not None:
        return Finding(
            "news2",
            key,
            severity,
            f"NEWS2 {news.total} (partial)",
            news.describe(),
            now,
            newest.device_id,
            newest.observation_id,
        )
    start = now - t.minutes("news2_recover_minutes")
    for moment in [start, *(m for m in times if m > start)]:
        earlier = news2.score_at(inputs, moment, t)
        if earlier is None or earlier[0].severity(t) is not None:
            return None
    return Cleared(key)


# --- random series ------------------------------------------------------------------------------

# Seconds between readings: bursts and gaps around the 5-15 minute sustain and recovery times.
_gaps = st.lists(st.sampled_from([0, 1, 30, 60, 120, 240, 600]), min_size=0, max_size=60)


def _series(gaps: Sequence[int], values: Sequence[float], tag: str) -> list[Point]:
    at, points = T0, []
    for n, (gap, value) in enumerate(zip(gaps, values, strict=False)):
        at += timedelta(seconds=gap)
        points.append(Point(at, value, f"{tag}-{n:03d}", "dev"))
    return points


@st.composite
def _points(draw: st.DrawFn, low: float, high: float) -> list[Point]:
    gaps = draw(_gaps)
    values = draw(st.lists(st.sampled_from(_levels(low, high)), min_size=len(gaps)))
    return _series(gaps, values, "obs")


def _levels(low: float, high: float) -> list[float]:
    """Values on and around every threshold of the rules, and between them."""
    step = (high - low) / 40
    return [round(low + k * step, 1) for k in range(41)]


@settings(max_examples=400, deadline=None)
@given(_points(0, 100), st.integers(0, 20), st.sampled_from([50.0, 90.0, 96.0]))
def test_lasts_decides_as_the_whole_trailing_run(
    points: list[Point], minutes: int, level: float
) -> None:
    holds: Callable[[float], bool] = lambda value: value < level  # noqa: E731
    at_least = timedelta(minutes=minutes)
    assert lasts(points, holds, at_least) == _spans(trailing_run(points, holds), at_least)


@settings(max_examples=300, deadline=None)
@given(_points(30, 450), st.sampled_from(RULES))
def test_each_threshold_rule_decides_as_it_did_over_the_whole_window(
    points: list[Point], rule: LevelRule
) -> None:
    assert rule.evaluate("p", points) == _level_rule_whole(rule, "p", points)


# NEWS2 inputs: mostly values that score 0 (so the score can stay low for the recovery time
# and clear), with a few that score 1-3 on each parameter.
_NEWS2_VALUES = {
    news2.RESPIRATION: [14, 16, 18, 20, 20, 20, 9, 21, 25],
    news2.SPO2: [96, 97, 98, 99, 99, 99, 95, 93, 91],
    news2.SYSTOLIC: [120, 130, 140, 150, 150, 150, 110, 100, 90],
    news2.PULSE: [60, 70, 80, 90, 90, 90, 91, 111, 131],
    news2.TEMPERATURE: [36.5, 37.0, 37.5, 38.0, 38.0, 38.0, 38.1, 35.5, 39.5],
}


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            name: st.builds(
                _series,
                _gaps,
                st.lists(st.sampled_from(values), min_size=60, max_size=60),
                st.just(name),
            )
            for name, values in _NEWS2_VALUES.items()
        }
    )
)
def test_news2_decides_as_it_did_over_the_whole_window(inputs: dict[str, list[Point]]) -> None:
    assert news2.evaluate("p", inputs, DEFAULT_THRESHOLDS) == _news2_whole("p", inputs)
