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


def lasts(points: Sequence[Point], holds: Callable[[float], bool], at_least: timedelta) -> bool:
    """Whether the trailing run of `holds` (`trailing_run`) lasts `at_least`: one point when
    that is zero, otherwise two or more points that far apart (a single reading never shows
    that a condition was sustained). Reads back only as far as deciding takes, so a healthy
    patient's recovery costs the recovery time's readings, not the whole window's."""
    if not points or not holds(points[-1].value):
        return False
    if at_least <= timedelta(0):
        return True
    newest = points[-1].at
    for index in range(len(points) - 2, -1, -1):
        point = points[index]
        if not holds(point.value):
            return False
        if newest - point.at >= at_least:
            return True
    return False
