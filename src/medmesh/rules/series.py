"""Stored observations as time series of plain points, one per code or panel component."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from medmesh.store.observations import StoredObservation


@dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    value: float
    observation_id: str
    device_id: str


def series(observations: Iterable[StoredObservation], codes: Sequence[str]) -> list[Point]:
    """Points of the observations whose code, or a component's code, is one of `codes`, in
    time order (several codes merge: capillary and CGM glucose are one series)."""
    wanted = set(codes)
    points = [
        Point(obs.effective, value.value, obs.id, obs.device_id)
        for obs in observations
        for value in obs.values
        if value.code in wanted
    ]
    points.sort(key=lambda p: (p.at, p.observation_id))
    return points


def trailing_run(points: Sequence[Point], holds: Callable[[float], bool]) -> list[Point]:
    """The newest points, back to the first one for which `holds` is false."""
    run: list[Point] = []
    for point in reversed(points):
        if not holds(point.value):
            break
        run.append(point)
    run.reverse()
    return run


def spans(run: Sequence[Point], at_least: timedelta) -> bool:
    """Whether a run lasts `at_least`: one point when that is zero, otherwise two or more
    points that far apart (a single reading never shows that a condition was sustained)."""
    if not run:
        return False
    if at_least <= timedelta(0):
        return True
    return len(run) >= 2 and run[-1].at - run[0].at >= at_least
