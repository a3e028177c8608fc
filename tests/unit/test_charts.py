"""Downsampling of chart series: at most ~500 buckets, every extreme kept, counts and means
exact, and uPlot's aligned layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.store.vitals import Bucket
from medmesh.web.charts import MAX_POINTS, Grid, downsample, regrid, resolution_for, uplot_data

START = datetime(2026, 11, 1, tzinfo=UTC)


def minute_points(count: int, start: datetime = START) -> list[tuple[float, float]]:
    return [((start + timedelta(minutes=i)).timestamp(), 60 + (i * 7) % 41) for i in range(count)]


def test_a_short_series_is_sent_point_for_point() -> None:
    points = minute_points(300)
    buckets = downsample(points, Grid.over(START, START + timedelta(hours=6)))
    assert [(b.at, b.mean, b.count) for b in buckets] == [(t, v, 1) for t, v in points]


def test_ninety_days_of_minute_readings_become_at_most_500_points() -> None:
    end = START + timedelta(days=90)
    points = minute_points(90 * 1440)
    buckets = downsample(points, Grid.over(START, end))
    assert 490 <= len(buckets) <= MAX_POINTS
    assert sum(b.count for b in buckets) == len(points)
    assert min(b.low for b in buckets) == min(v for _, v in points)
    assert max(b.high for b in buckets) == max(v for _, v in points)


def test_each_bucket_holds_the_min_max_and_mean_of_its_readings() -> None:
    grid = Grid(origin=0.0, width=10.0, count=2)
    points = [(1.0, 5.0), (2.0, 9.0), (3.0, 7.0), (11.0, 1.0), (12.0, 3.0)]
    assert downsample(points, grid) == [
        Bucket(at=2.0, low=5.0, high=9.0, mean=7.0, count=3),
        Bucket(at=11.5, low=1.0, high=3.0, mean=2.0, count=2),
    ]


def test_empty_buckets_are_left_out_rather_than_drawn_as_zero() -> None:
    grid = Grid(origin=0.0, width=1.0, count=3)
    points = [(0.1, 1.0), (0.2, 2.0), (0.3, 3.0), (2.5, 4.0)]
    assert [b.count for b in downsample(points, grid)] == [3, 1]


def test_readings_past_the_edges_fall_into_the_edge_buckets() -> None:
    grid = Grid(origin=100.0, width=10.0, count=2)
    assert grid.index(50.0) == 0
    assert grid.index(1000.0) == 1
    assert [b.count for b in regrid([(-3, _one(1.0)), (0, _one(2.0)), (7, _one(3.0))], grid)] == [
        2,
        1,
    ]


def test_buckets_the_database_split_at_one_index_are_merged() -> None:
    grid = Grid(origin=0.0, width=10.0, count=5)
    merged = regrid(
        [(1, Bucket(12.0, 4.0, 6.0, 5.0, 2)), (1, Bucket(18.0, 1.0, 9.0, 5.0, 2))], grid
    )
    assert merged == [Bucket(15.0, 1.0, 9.0, 5.0, 4)]


def test_uplot_data_aligns_series_read_at_different_times() -> None:
    data = uplot_data([("bg", [_one(7.0, at=10.0)]), ("cgm", [_one(8.0, at=20.0)])])
    assert data["x"] == [10.0, 20.0]
    assert data["series"]["bg"]["mean"] == [7.0, None]
    assert data["series"]["cgm"] == {"mean": [None, 8.0], "low": [None, 8.0], "high": [None, 8.0]}


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=86_400, allow_nan=False),
            st.floats(min_value=-500, max_value=500, allow_nan=False),
        ),
        min_size=1,
        max_size=2000,
    ),
    st.integers(min_value=1, max_value=600),
)
def test_downsampling_keeps_count_extremes_and_order(
    raw: list[tuple[float, float]], count: int
) -> None:
    points = sorted(raw)
    buckets = downsample(points, Grid(origin=0.0, width=86_400 / count, count=count))
    assert len(buckets) <= max(count, len(points)) and len(buckets) <= len(points)
    if len(points) > count:
        assert len(buckets) <= count
    assert sum(b.count for b in buckets) == len(points)
    assert min(b.low for b in buckets) == min(v for _, v in points)
    assert max(b.high for b in buckets) == max(v for _, v in points)
    assert all(b.low <= b.mean + 1e-9 and b.mean <= b.high + 1e-9 for b in buckets)
    assert [b.at for b in buckets] == sorted(b.at for b in buckets)


def _one(value: float, at: float = 0.0) -> Bucket:
    return Bucket(at, value, value, value, 1)


@pytest.mark.parametrize(
    ("span", "resolution"),
    [
        (timedelta(hours=6), None),
        (timedelta(hours=24), 60),
        (timedelta(hours=48), 60),
        (timedelta(days=7), 3600),
        (timedelta(days=90), 3600),
    ],
)
def test_long_ranges_read_minute_or_hour_rollups_on_a_grid_aligned_to_them(
    span: timedelta, resolution: int | None
) -> None:
    assert resolution_for(span) == resolution
    if resolution is None:
        return
    end = datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)
    grid = Grid.aligned(end - span, end, resolution)
    assert grid.origin % resolution == 0 and grid.width % resolution == 0
    assert grid.origin <= (end - span).timestamp() < grid.origin + resolution
    assert grid.count <= MAX_POINTS
    assert grid.origin + grid.count * grid.width >= end.timestamp()
    # Every rollup bucket of the range lies inside one grid bucket.
    for bucket in range(int(grid.origin), int(end.timestamp()), resolution):
        assert grid.index(bucket) == grid.index(bucket + resolution - 1e-6)
