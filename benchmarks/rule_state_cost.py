"""What the rules' own work costs as a window fills: NEWS2's evaluation over 60 and 95 minutes
of 1 Hz pulse, SpO2 and respiration, and the size and encoding time of a rule state holding
95 minutes of 1 Hz heart rate and SpO2 (a bedside monitor), in process, no database.

Run: `.venv/bin/python benchmarks/rule_state_cost.py` (`--quick`: the same, it takes seconds).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.rules import catalog, news2
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.series import Point
from medmesh.rules.state import RuleState, observed

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VALUES = {news2.PULSE: 70.0, news2.SPO2: 97.0, news2.RESPIRATION: 16.0}


def news2_ms(minutes: int) -> float:
    t = thresholds_for(None)
    n = minutes * 60
    inputs = {
        name: [
            Point(NOW - timedelta(seconds=n - i), value, f"{i:036d}", "d" * 36) for i in range(n)
        ]
        for name, value in VALUES.items()
    }
    started = time.perf_counter()
    news2.evaluate("p", inputs, t)
    return (time.perf_counter() - started) * 1000


def state_size() -> tuple[int, int, float]:
    t = thresholds_for(None)
    hr, spo2 = measure_by_key("heart-rate"), measure_by_key("oxygen-saturation")
    assert hr is not None and spo2 is not None
    state = RuleState("p" * 36, NOW - timedelta(hours=3))
    readings = []
    for i in range(95 * 60):
        at = NOW - timedelta(hours=2) + timedelta(seconds=i)
        for measure, value, unit in ((hr, 70.0, "/min"), (spo2, 97.0, "%")):
            readings.append(
                Reading(
                    "d" * 36,
                    f"{measure.key}-{i}",
                    "p" * 36,
                    measure,
                    at,
                    (MeasuredValue(measure.code, value, unit),),
                )
            )
    state.merge(observed(r) for r in readings)
    state.trim(catalog.lookback(t))
    started = time.perf_counter()
    blob = state.encode()
    return len(state), len(blob), (time.perf_counter() - started) * 1000


def main() -> int:
    for minutes in (60, 95):
        print(
            f"NEWS2 evaluate, {minutes} min of 1 Hz pulse, SpO2, respiration: "
            f"{news2_ms(minutes):.1f} ms"
        )
    readings, size, ms = state_size()
    print(
        f"rule state, 95 min of 1 Hz heart rate and SpO2: {readings} readings, "
        f"{size:,} bytes encoded ({size / readings:.0f} B a reading) in {ms:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
