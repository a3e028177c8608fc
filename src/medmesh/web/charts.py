"""Chart series for the patient page, downsampled on the server: a range is split into at most
~500 equal time buckets and each series sends its min, max and mean per bucket, so 90 days of
minute readings reach the browser as a few kilobytes and the chart still shows every extreme.

Up to `RAW_ONLY` the readings are read and bucketed here (`downsample`). Longer ranges read the
store's sealed rollups (store/rollups.py): per-minute buckets up to `MINUTES_UP_TO`, per-hour
ones beyond, on a grid aligned to them (`Grid.aligned`), so a 90-day chart opens about 2,160
small rows however many readings there are. A range with no more readings than points is read
raw instead, each reading drawn at its own time, as on short ranges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from medmesh.store.rollups import HOUR, MINUTE, RolledUp
from medmesh.store.vitals import Bucket, Vitals
from medmesh.web.vitals import VitalSpec

MAX_POINTS = 500
RAW_RANGE = timedelta(hours=24)  # the page calls longer ranges "downsampled"
RAW_ONLY = timedelta(hours=6)  # up to this, charts read the readings themselves
MINUTES_UP_TO = timedelta(hours=48)  # per-minute rollups up to this, per-hour beyond

RANGES: dict[str, timedelta] = {
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
RANGE_LABELS = {"6h": "6 h", "24h": "24 h", "7d": "7 d", "30d": "30 d", "90d": "90 d"}
DEFAULT_RANGE = "24h"


@dataclass(frozen=True, slots=True)
class Grid:
    """`count` buckets of `width` seconds from `origin` (seconds since the epoch)."""

    origin: float
    width: float
    count: int

    @classmethod
    def over(cls, start: datetime, end: datetime, count: int = MAX_POINTS) -> Grid:
        span = max((end - start).total_seconds(), 1.0)
        return cls(start.timestamp(), span / count, count)

    @classmethod
    def aligned(cls, start: datetime, end: datetime, resolution: int) -> Grid:
        """At most MAX_POINTS buckets, each a whole number of rollup buckets of `resolution`
        seconds, from the rollup bucket holding `start` to `end`: every rollup falls in one."""
        origin = math.floor(start.timestamp() / resolution) * resolution
        span = max(end.timestamp() - origin, 1.0)
        width = math.ceil(span / resolution / MAX_POINTS) * resolution
        return cls(float(origin), float(width), max(math.ceil(span / width), 1))

    def index(self, at: float) -> int:
        """The bucket of a time; times past either edge fall into the edge bucket."""
        return min(max(math.floor((at - self.origin) / self.width), 0), self.count - 1)


def merge(a: Bucket, b: Bucket) -> Bucket:
    count = a.count + b.count
    return Bucket(
        at=(a.at * a.count + b.at * b.count) / count,
        low=min(a.low, b.low),
        high=max(a.high, b.high),
        mean=(a.mean * a.count + b.mean * b.count) / count,
        count=count,
    )


def downsample(points: Sequence[tuple[float, float]], grid: Grid) -> list[Bucket]:
    """Points (time, value), oldest first, as at most `grid.count` buckets, empty ones left
    out. No more points than buckets: each point stays itself, at its own time."""
    if len(points) <= grid.count:
        return [Bucket(at, value, value, value, 1) for at, value in points]
    return regrid([(grid.index(at), Bucket(at, v, v, v, 1)) for at, v in points], grid)


def regrid(indexed: Sequence[tuple[int, Bucket]], grid: Grid) -> list[Bucket]:
    """Buckets with their grid index, in order, merged where indexes fall together (and
    indexes past the grid's edges folded into the edge buckets)."""
    merged: list[Bucket] = []
    last = -1
    for index, bucket in indexed:
        index = min(max(index, 0), grid.count - 1)
        if merged and index == last:
            merged[-1] = merge(merged[-1], bucket)
        else:
            merged.append(bucket)
            last = index
    return merged


def uplot_data(series: Sequence[tuple[str, Sequence[Bucket]]]) -> dict[str, Any]:
    """uPlot's layout: one time axis and, per series, mean/low/high arrays aligned to it, with
    None where a series has no value at a time (two glucose sources read at different times).

    {"x": [t, ...], "series": {"sys": {"mean": [...], "low": [...], "high": [...]}, ...}}
    """
    times = sorted({round(b.at, 3) for _, buckets in series for b in buckets})
    position = {t: i for i, t in enumerate(times)}
    out: dict[str, dict[str, list[float | None]]] = {}
    for key, buckets in series:
        mean: list[float | None] = [None] * len(times)
        low: list[float | None] = [None] * len(times)
        high: list[float | None] = [None] * len(times)
        for b in buckets:
            i = position[round(b.at, 3)]
            mean[i], low[i], high[i] = round(b.mean, 2), b.low, b.high
        out[key] = {"mean": mean, "low": low, "high": high}
    return {"x": times, "series": out}


def resolution_for(span: timedelta) -> int | None:
    """The rollup resolution a range is read at; None: the readings themselves."""
    if span <= RAW_ONLY:
        return None
    return MINUTE if span <= MINUTES_UP_TO else HOUR


def from_rollups(rolled: Sequence[RolledUp], grid: Grid) -> list[Bucket]:
    """Rollup buckets, oldest first, merged onto an aligned grid: each grid bucket's sums
    gathered first and one Bucket made of them (a 90-day chart folds ~2,160 rollups into ~430
    buckets; merging pairwise made a Bucket for every rollup and every merge)."""
    merged: list[Bucket] = []
    last = -1
    count = 0
    time_sum = value_sum = low = high = 0.0
    origin, width, edge = grid.origin, grid.width, grid.count - 1
    for r in rolled:
        stats = r.stats
        index = min(max(math.floor((r.bucket - origin) / width), 0), edge)  # Grid.index
        if index != last and count:
            merged.append(Bucket(time_sum / count, low, high, value_sum / count, count))
            count = 0
        if count == 0:
            last, low, high, time_sum, value_sum = index, stats.low, stats.high, 0.0, 0.0
        count += stats.count
        time_sum += r.bucket * stats.count + stats.time_sum
        value_sum += stats.value_sum
        low = min(low, stats.low)
        high = max(high, stats.high)
    if count:
        merged.append(Bucket(time_sum / count, low, high, value_sum / count, count))
    return merged


async def load_series(
    vitals: Vitals, patient_id: str, vital: VitalSpec, start: datetime, end: datetime
) -> list[tuple[str, list[Bucket]]]:
    """Each series of the vital from `start` (exclusive; on long ranges from the start of the
    rollup bucket holding it) to `end`, on a grid of at most MAX_POINTS buckets."""
    resolution = resolution_for(end - start)
    loaded: list[tuple[str, list[Bucket]]] = []
    for spec in vital.series:
        if resolution is not None:
            grid = Grid.aligned(start, end, resolution)
            rolled = await vitals.rolled_up(
                patient_id,
                spec.code,
                component=spec.component,
                resolution=resolution,
                since=datetime.fromtimestamp(grid.origin, UTC),
                until=end,
            )
            if sum(r.stats.count for r in rolled) > MAX_POINTS:
                loaded.append((spec.key, from_rollups(rolled, grid)))
                continue
        raw = await vitals.series(patient_id, spec.code, component=spec.component, after=start)
        points = [(at.timestamp(), value) for at, value in raw]
        loaded.append((spec.key, downsample(points, Grid.over(start, end))))
    return loaded


async def load_new(
    vitals: Vitals,
    patient_id: str,
    vital: VitalSpec,
    start: datetime,
    received_after: datetime,
    end: datetime,
) -> list[tuple[str, list[Bucket]]]:
    """Each series' readings taken after `start` and stored after `received_after` (what a
    live chart has not seen yet), downsampled if a long absence let many pile up."""
    grid = Grid.over(start, end)
    loaded: list[tuple[str, list[Bucket]]] = []
    for spec in vital.series:
        raw = await vitals.series(
            patient_id,
            spec.code,
            component=spec.component,
            after=start,
            received_after=received_after,
        )
        points = [(at.timestamp(), value) for at, value in raw]
        loaded.append((spec.key, downsample(points, grid)))
    return loaded
