"""A patient's rule state: the readings the alert rules read, from a horizon on, so that a
committed batch is merged into it rather than the rules' window being read again.

The rules keep no other memory: their hysteresis lives in the patient's active alerts, and
everything else is recomputed from these readings, so judging from the state gives exactly
the outcomes judging from the stored history gives (tests/integration/test_rule_state.py).
The state is complete from `horizon` on (every reading of the rules' codes at or after it that
has been through the rules is in it); older readings are dropped as the newest moves on.

Stored as a small head (horizon, generation) and segments, one a minute of reading time
(`BUCKET`): a batch appends a segment holding only its own new readings, a minute that has
closed is compacted into one segment once, and minutes behind the horizon are deleted. So a
batch writes what the batch holds (plus, about once a minute, that minute again), not the
window. A process holding a decoded copy catches up by reading only the segments written
since its version (docs/alerts.md).
"""

from __future__ import annotations

import secrets
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from medmesh.domain.reading import Reading
from medmesh.rules import catalog
from medmesh.rules.series import Point
from medmesh.store.observations import StoredObservation
from medmesh.store.rule_states import SegmentWrite

# Kept beyond the rules' lookback, so a batch a little older than the newest reading (a device
# catching up) is still judged from the state; an older one rebuilds it from history.
SLACK = timedelta(minutes=15)
TRIM_STEP = timedelta(minutes=5)
# Readings are stored in segments by minute of their time: compaction rewrites one minute.
BUCKET = timedelta(minutes=1)
# A closed minute held in more segments than this is rewritten as one (large batches leave a
# minute in two or three segments, which cost nothing to keep; one-reading batches leave many).
COMPACT_AFTER = 4
FORMAT = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET_US = BUCKET // timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _bucket(micros: int) -> int:
    return micros - micros % _BUCKET_US


# What merging takes of a reading: time, code, observation id, device id, (value code, value)s.
_Entry = tuple[datetime, str, str, str, Sequence[tuple[str, float]]]


def _stored_entries(found: Iterable[StoredObservation]) -> Iterable[_Entry]:
    for obs in found:
        yield (
            obs.effective,
            obs.code,
            obs.id,
            obs.device_id,
            [(v.code, v.value) for v in obs.values],
        )


def _reading_entries(readings: Iterable[Reading]) -> Iterable[_Entry]:
    """Committed readings as `_stored_entries` gives them once stored and read back (single
    values under the observation's code), without a StoredObservation and a MeasuredValue a
    reading in between (the worker's hottest loop)."""
    for r in readings:
        measure = r.measure
        code = measure.code
        if measure.components:  # a panel: its components' codes
            pairs = [(v.code, v.value) for v in r.values]
        else:  # stored single values carry the observation's code
            pairs = [(code, r.values[0].value)]
        yield r.effective, code, r.observation_id, r.device_id, pairs


def _order(point: Point) -> tuple[datetime, str]:
    return point.at, point.observation_id  # as `series` orders points


def _at(point: Point) -> datetime:
    return point.at


@dataclass(frozen=True, slots=True)
class Head:
    """What a stored state says of itself: from when it is complete, and which full write it
    descends from (a copy of another generation cannot be caught up, only reloaded)."""

    horizon: datetime
    generation: str

    def encode(self) -> bytes:
        return orjson.dumps(
            {"format": FORMAT, "horizon": _micros(self.horizon), "generation": self.generation}
        )

    @classmethod
    def decode(cls, data: bytes) -> Head | None:
        """The head in `data`; None when it is in a format this version does not read."""
        raw = orjson.loads(data)
        if raw.get("format") != FORMAT:
            return None
        return cls(_moment(raw["horizon"]), raw["generation"])


@dataclass(frozen=True, slots=True)
class StateWrite:
    """What storing a state changes: its head, the segments to write, the minutes before
    `drop_before` to delete, and whether every other segment goes (a full write)."""

    head: bytes
    segments: tuple[SegmentWrite, ...]
    drop_before: datetime | None
    replace_all: bool

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(s.data) for s in self.segments)


def _segment(bucket: int, rows: Iterable[bytes], whole: bool) -> SegmentWrite:
    head = f'{{"bucket":{bucket},"whole":{"true" if whole else "false"},"readings":['.encode()
    return SegmentWrite(_moment(bucket), head + b",".join(rows) + b"]}", whole)


@dataclass(slots=True)
class RuleState:
    """What the rules read of one patient's readings from `horizon` on.

    Kept as the rules use it: per value code (a panel's components apart), points in the order
    `series` gives, so a window is two binary searches and a slice. Each reading's encoded
    form is made once, when it is merged, so storing joins bytes rather than encoding every
    reading again. A new state is a full write (a new generation) until it is first stored.
    """

    patient_id: str
    horizon: datetime
    newest: datetime | None = None
    generation: str = field(default_factory=lambda: secrets.token_hex(8))
    # minute → observation id → encoded reading
    _buckets: dict[int, dict[str, bytes]] = field(default_factory=dict)
    _points: dict[str, list[Point]] = field(default_factory=dict)
    # Not yet stored: readings merged since the last write, by minute; a full write pending.
    _fresh: dict[int, list[bytes]] = field(default_factory=dict)
    _rewrite: bool = True
    # minute → how many segments the store holds for it (as far as this copy knows)
    _stored: dict[int, int] = field(default_factory=dict)
    _drop_before: int | None = None

    def __len__(self) -> int:
        return sum(len(readings) for readings in self._buckets.values())

    def covers(self, since: datetime) -> bool:
        return since >= self.horizon

    def merge(self, found: Iterable[StoredObservation]) -> None:
        """Add readings (again is harmless); those before the horizon or of codes no rule
        reads are left out."""
        self._merge(_stored_entries(found), fresh=True)

    def merge_readings(self, readings: Iterable[Reading]) -> None:
        """`merge` of readings just committed, as read back from the store."""
        self._merge(_reading_entries(readings), fresh=True)

    def _merge(self, entries: Iterable[_Entry], *, fresh: bool) -> None:
        rule_codes = catalog.RULE_CODES
        horizon = self.horizon
        buckets = self._buckets
        points_of = self._points
        newest = self.newest
        for effective, code, oid, device_id, pairs in entries:
            if code not in rule_codes or effective < horizon:
                continue
            at = _micros(effective)
            minute = _bucket(at)
            bucket = buckets.get(minute)
            if bucket is None:
                bucket = buckets[minute] = {}
            elif oid in bucket:
                continue
            # Copied to a bytes of its own size: orjson's result keeps the buffer it wrote into
            # (4 KiB for a ~100-byte reading), and a cached state keeps every row it holds
            # (2,000 cached states of 40 readings: 176 MiB traced, 26 MiB copied).
            row = bytes(memoryview(orjson.dumps([at, code, oid, device_id, pairs])))
            bucket[oid] = row
            if fresh:
                self._fresh.setdefault(minute, []).append(row)
            for value_code, value in pairs:
                points = points_of.get(value_code)
                if points is None:
                    points = points_of[value_code] = []
                point = Point(effective, value, oid, device_id)
                if points:
                    last = points[-1]
                    # `_order(last) < _order(point)`, without the two tuples: the usual case,
                    # readings arriving in time order.
                    if last.at < effective or (last.at == effective and last.observation_id < oid):
                        points.append(point)
                    else:
                        insort(points, point, key=_order)
                else:
                    points.append(point)
            if newest is None or effective > newest:
                newest = effective
        self.newest = newest

    def trim(self, lookback: timedelta) -> None:
        """Drop what no batch judged from the state reads any more (in steps, not on every
        batch, so that dropping costs little per batch)."""
        if self.newest is None:
            return
        cut = self.newest - lookback - SLACK
        if cut - self.horizon < TRIM_STEP:
            return
        self._raise_horizon(cut)
        first = _bucket(_micros(cut))
        self._drop_before = first
        for bucket in [b for b in self._stored if b < first]:
            del self._stored[bucket]

    def _raise_horizon(self, cut: datetime) -> None:
        if cut <= self.horizon:
            return
        self.horizon = cut
        at = _micros(cut)
        first = _bucket(at)
        for bucket in [b for b in self._buckets if b < first]:
            del self._buckets[bucket]
        if first in self._buckets:
            self._buckets[first] = {
                oid: row for oid, row in self._buckets[first].items() if orjson.loads(row)[0] >= at
            }
        for points in self._points.values():
            del points[: bisect_left(points, cut, key=_at)]

    def window(self, since: datetime, until: datetime) -> catalog.SeriesOf:
        """`series_of` for the rules: points with since <= time <= until."""

        def series_of(codes: Sequence[str]) -> list[Point]:
            parts = []
            for code in codes:
                points = self._points.get(code, [])
                low = bisect_left(points, since, key=_at)
                parts.append(points[low : bisect_right(points, until, lo=low, key=_at)])
            if len(parts) == 1:
                return parts[0]
            merged = [point for part in parts for point in part]
            merged.sort(key=_order)
            return merged

        return series_of

    def changes(self) -> StateWrite:
        """What to store now, and the state marked as stored (the caller writes it in the
        transaction that judged it; a copy whose transaction fails is thrown away)."""
        head = Head(self.horizon, self.generation).encode()
        if self._rewrite:
            segments = tuple(_segment(b, rows.values(), True) for b, rows in self._buckets.items())
            self._stored = {b: 1 for b in self._buckets}
            write = StateWrite(head, segments, None, replace_all=True)
        else:
            write = StateWrite(head, self._changed_segments(), self._dropped(), replace_all=False)
        self._fresh = {}
        self._rewrite = False
        self._drop_before = None
        return write

    def _changed_segments(self) -> tuple[SegmentWrite, ...]:
        """A segment of each minute's fresh readings; a closed minute (before the newest
        reading's) held in more than `COMPACT_AFTER` segments is rewritten whole, once."""
        open_bucket = _bucket(_micros(self.newest)) if self.newest is not None else 0
        segments = []
        stale = (b for b, n in self._stored.items() if n > COMPACT_AFTER)
        for bucket in sorted({*self._fresh, *stale}):
            if bucket not in self._buckets:  # behind the horizon
                self._stored.pop(bucket, None)
                continue
            stored = self._stored.get(bucket, 0) + (1 if bucket in self._fresh else 0)
            if bucket < open_bucket and stored > COMPACT_AFTER:
                segments.append(_segment(bucket, self._buckets[bucket].values(), True))
                self._stored[bucket] = 1
            elif bucket in self._fresh:
                segments.append(_segment(bucket, self._fresh[bucket], False))
                self._stored[bucket] = stored
        return tuple(segments)

    def _dropped(self) -> datetime | None:
        return None if self._drop_before is None else _moment(self._drop_before)

    def catch_up(self, head: Head, segments: Iterable[bytes]) -> None:
        """Bring a copy up to date with segments others wrote after it (same generation)."""
        self._raise_horizon(head.horizon)
        for data in segments:
            self._load_segment(data)

    def _load_segment(self, data: bytes) -> None:
        raw = orjson.loads(data)
        bucket = raw["bucket"]
        if raw["whole"]:
            self._stored[bucket] = 1
        else:
            self._stored[bucket] = self._stored.get(bucket, 0) + 1
        self._merge(
            (
                (_moment(at), code, oid, device_id, values)
                for at, code, oid, device_id, values in raw["readings"]
            ),
            fresh=False,
        )

    @classmethod
    def load(cls, patient_id: str, head: Head, segments: Iterable[bytes]) -> RuleState:
        """The stored state from its head and every segment, in the order written."""
        state = cls(patient_id, head.horizon, generation=head.generation, _rewrite=False)
        for data in segments:
            state._load_segment(data)
        return state
