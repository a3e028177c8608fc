"""Which committed readings may raise an alert on their own (a glucose or blood pressure value
beyond a one-reading level of the default thresholds), so that after-commit work can judge
their patients ahead of a long queue (ingest/after_commit.py). A hint for ordering only: the
rules themselves decide, with the patient's own thresholds."""

from __future__ import annotations

from collections.abc import Callable

from medmesh.domain.reading import Reading
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.thresholds import DIASTOLIC, SYSTOLIC, level_rules

_Beyond = Callable[[float], bool]


def _one_reading_levels() -> dict[str, _Beyond]:
    """Code → whether a value is beyond the mildest level of a rule that needs one reading."""
    t = DEFAULT_THRESHOLDS
    found: dict[str, list[_Beyond]] = {}
    for codes, rules in level_rules(t).items():
        for rule in rules:
            if rule.sustain.total_seconds() <= 0:
                for code in codes:
                    found.setdefault(code, []).append(rule.beyond(rule.levels[0][0]))
    found.setdefault(SYSTOLIC, []).append(lambda value: value > t.systolic_crisis)
    found.setdefault(DIASTOLIC, []).append(lambda value: value > t.diastolic_crisis)
    return {code: _any(tests) for code, tests in found.items()}


def _any(tests: list[_Beyond]) -> _Beyond:
    return lambda value: any(test(value) for test in tests)


_LEVELS = _one_reading_levels()


def may_alert_at_once(reading: Reading) -> bool:
    """Whether `reading` holds a value that one reading suffices to alert on (default levels)."""
    if reading.measure.is_panel:
        pairs = [(v.code, v.value) for v in reading.values]
    else:
        pairs = [(reading.measure.code, reading.values[0].value)]
    for code, value in pairs:
        beyond = _LEVELS.get(code)
        if beyond is not None and beyond(value):
            return True
    return False
