"""Per-minute and per-hour rollups of each patient's readings (count, time and value sums, low,
high per quantity), sealed with the patient's key and kept current at ingest, so a long chart
reads one small row an hour instead of every reading (docs/dashboard.md#charts-on-long-ranges).

`add_readings` is the one hook of the write path: it is called with the readings a batch
actually stored, in the batch's transaction, so a redelivered reading (not stored again) is
counted once and a late reading updates the bucket it belongs to.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import DataKey
from medmesh.domain.reading import Reading
from medmesh.store._sql import insert_or_lock, update_rows
from medmesh.store.database import cipher_of
from medmesh.store.schema import observation_rollups

MINUTE = 60
HOUR = 3600
RESOLUTIONS = (MINUTE, HOUR)

# Sealed column; each blob is bound to its patient and its row (resolution, quantity, bucket).
_STATS = "observation_rollups.stats"
# count, sum of (time - bucket start) in seconds, sum of values, lowest, highest.
_PACKED = struct.Struct("<qdddd")
# Rows a statement touches at most: bound parameters stay far below SQLite's limit.
_CHUNK = 500
_KEY = ("patient_id", "code", "component", "resolution", "bucket")


@dataclass(slots=True)
class Stats:
    """One bucket's readings of one quantity."""

    count: int
    time_sum: float  # seconds after the bucket's start, summed
    value_sum: float
    low: float
    high: float

    @classmethod
    def of(cls, offset: float, value: float) -> Stats:
        return cls(1, offset, value, value, value)

    def add_one(self, offset: float, value: float) -> None:
        self.count += 1
        self.time_sum += offset
        self.value_sum += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    def add(self, other: Stats) -> None:
        self.count += other.count
        self.time_sum += other.time_sum
        self.value_sum += other.value_sum
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def pack(self) -> bytes:
        return _PACKED.pack(self.count, self.time_sum, self.value_sum, self.low, self.high)

    @classmethod
    def unpack(cls, data: bytes) -> Stats:
        count, time_sum, value_sum, low, high = _PACKED.unpack(data)
        return cls(count, time_sum, value_sum, low, high)


class RollupKey(NamedTuple):
    """A bucket's key, in the order buckets are locked. A tuple, not a dataclass: a batch of
    readings a minute apart makes and hashes two a reading (docs/benchmarks.md)."""

    patient_id: str
    code: str
    component: str  # a panel's component code (systolic of a blood pressure); "" otherwise
    resolution: int  # seconds: MINUTE or HOUR
    bucket: int  # the bucket's start, seconds since the Unix epoch

    def row(self) -> str:
        return f"{self.resolution}/{self.code}/{self.component}/{self.bucket}"


@dataclass(frozen=True, slots=True)
class RolledUp:
    """A stored bucket, opened: its start (epoch seconds) and its readings' statistics."""

    bucket: int
    stats: Stats

    @property
    def mean_time(self) -> float:
        return self.bucket + self.stats.time_sum / self.stats.count

    @property
    def mean(self) -> float:
        return self.stats.value_sum / self.stats.count


def summarise(readings: Iterable[Reading]) -> dict[RollupKey, Stats]:
    """What the readings add to each bucket they fall in, at every resolution."""
    deltas: dict[RollupKey, Stats] = {}
    for reading in readings:
        measure, at = reading.measure, reading.effective.timestamp()
        if measure.components:  # a panel: each component, under the panel's code
            for v in reading.values:
                _add_at(deltas, reading.patient_id, measure.code, v.code, at, v.value)
        else:
            _add_at(deltas, reading.patient_id, measure.code, "", at, reading.values[0].value)
    return deltas


def summarise_values(
    values: Iterable[tuple[str, str, str, float, float]],
) -> dict[RollupKey, Stats]:
    """The same from (patient, code, component, epoch seconds, value) of each quantity."""
    deltas: dict[RollupKey, Stats] = {}
    for patient_id, code, component, at, value in values:
        _add_at(deltas, patient_id, code, component, at, value)
    return deltas


def _add_at(
    deltas: dict[RollupKey, Stats],
    patient_id: str,
    code: str,
    component: str,
    at: float,
    value: float,
) -> None:
    # Looked up by a plain tuple (equal to the RollupKey, with the same hash); the NamedTuple
    # is made only for a bucket the batch has not met yet. Readings in time order fall in the
    # bucket before them nearly always.
    for resolution in RESOLUTIONS:
        bucket = math.floor(at / resolution) * resolution
        found = deltas.get((patient_id, code, component, resolution, bucket))  # type: ignore[call-overload]
        if found is None:
            key = RollupKey(patient_id, code, component, resolution, bucket)
            deltas[key] = Stats.of(at - bucket, value)
        else:
            found.add_one(at - bucket, value)


async def add_readings(conn: AsyncConnection, stored: Sequence[Reading]) -> None:
    """Fold readings just stored into their buckets, in the caller's transaction.

    Only pass readings this transaction inserted: one already stored must not count twice
    (nor does one passed twice: the first of each observation id counts).
    """
    once = {r.observation_id: r for r in reversed(stored)}
    if once:
        await Rollups(conn).add(summarise(once.values()))


class Rollups:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, deltas: dict[RollupKey, Stats]) -> None:
        """Merge `deltas` into the stored buckets (made when missing).

        Buckets are locked in key order (on PostgreSQL by the upsert that makes or finds them;
        SQLite writes one transaction at a time), so two batches of one patient, in two
        processes, add up rather than overwrite each other and cannot deadlock.
        """
        if not deltas:
            return
        ordered = sorted(deltas)
        keys = await cipher_of(self._conn).keys_for({k.patient_id for k in ordered})
        for start in range(0, len(ordered), _CHUNK):
            await self._add_chunk(ordered[start : start + _CHUNK], deltas, keys)

    async def _add_chunk(
        self, chunk: list[RollupKey], deltas: dict[RollupKey, Stats], keys: dict[str, DataKey]
    ) -> None:
        # One statement makes each missing bucket, already holding its new readings (sealed),
        # and locks each existing one, in key order, returning every bucket as stored. A
        # bucket that comes back holding the very blob sent (sealed with a random nonce, so no
        # other has it) was made by this statement: done. Only the existing ones are merged
        # and written again. Readings a minute apart each start a minute bucket of their own,
        # so most buckets are new and are written once.
        table = observation_rollups
        sent = {k: keys[k.patient_id].seal(deltas[k].pack(), _STATS, k.row()) for k in chunk}
        returned = await insert_or_lock(
            self._conn,
            table,
            _KEY,
            "stats",
            [
                {
                    "patient_id": k.patient_id,
                    "code": k.code,
                    "component": k.component,
                    "resolution": k.resolution,
                    "bucket": k.bucket,
                    "stats": sealed,
                }
                for k, sealed in sent.items()
            ],
        )
        changes = []
        for r in returned:
            k = RollupKey(r.patient_id, r.code, r.component, r.resolution, r.bucket)
            if r.stats == sent[k]:
                continue
            merged = Stats.unpack(keys[k.patient_id].open(r.stats, _STATS, k.row()))
            merged.add(deltas[k])
            changes.append(
                {
                    "patient_id": k.patient_id,
                    "code": k.code,
                    "component": k.component,
                    "resolution": k.resolution,
                    "bucket": k.bucket,
                    "stats": keys[k.patient_id].seal(merged.pack(), _STATS, k.row()),
                }
            )
        # Written back to the existing buckets the statement locked.
        await update_rows(self._conn, table, _KEY, changes)

    async def delete_patient(self, patient_id: str) -> int:
        table = observation_rollups
        result = await self._conn.execute(delete(table).where(table.c.patient_id == patient_id))
        return int(result.rowcount or 0)

    async def read(
        self,
        patient_id: str,
        code: str,
        *,
        component: str | None = None,
        resolution: int,
        since: datetime,
        until: datetime,
    ) -> list[RolledUp]:
        """The buckets of one quantity whose start is in [since, until], oldest first, opened."""
        table = observation_rollups
        query = (
            select(table.c.bucket, table.c.stats)
            .where(
                table.c.patient_id == patient_id,
                table.c.code == code,
                table.c.component == (component or ""),
                table.c.resolution == resolution,
                table.c.bucket >= math.floor(since.timestamp()),
                table.c.bucket <= math.floor(until.timestamp()),
            )
            .order_by(table.c.bucket)
        )
        rows = (await self._conn.execute(query)).all()
        if not rows:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        prefix = f"{resolution}/{code}/{component or ''}/"
        # One batched open (the associated data's prefix built once): a 90-day chart opens
        # ~2,160 rows a series, and per-row `open` was most of its time.
        opened = key.open_many([(f"{prefix}{bucket}", sealed) for bucket, sealed in rows], _STATS)
        unpack = _PACKED.unpack
        return [
            RolledUp(bucket, Stats(*unpack(data)))
            for (bucket, _), data in zip(rows, opened, strict=True)
        ]
