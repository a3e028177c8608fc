"""Reads behind the clinician dashboard: the latest value of each vital sign per patient, and
one quantity's values over a time range, raw or aggregated into time buckets (chart series).
All of them are range scans of the (patient, code, effective) index of `observations`; values
are decrypted here with the patient's data key."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    extract,
    func,
    literal,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.database import cipher_of
from medmesh.store.observations import COMPONENT_VALUE, VALUE, component_row, patient_keys
from medmesh.store.rollups import RolledUp, Rollups
from medmesh.store.schema import observation_components, observations, patients

# Bound parameters per statement stay well below SQLite's limit (32766) and PostgreSQL's.
_MAX_PATIENTS_PER_STATEMENT = 2000


@dataclass(frozen=True, slots=True)
class LatestValue:
    """A patient's newest observation of one code; `values` maps each quantity's code (the
    observation's own code, or a panel's component codes) to its value."""

    patient_id: str
    code: str
    effective: datetime
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Bucket:
    """The values of one quantity within a time bucket."""

    at: float  # the mean time of the readings in it, in seconds since the Unix epoch
    low: float
    high: float
    mean: float
    count: int


class Vitals:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def latest(
        self, patient_ids: Sequence[str], codes: Sequence[str]
    ) -> dict[tuple[str, str], LatestValue]:
        """The newest observation per (patient, code), for every pair that has one.

        One statement, whatever the number of pairs: per pair, a correlated
        `ORDER BY effective DESC LIMIT 1` (an index seek), rather than a GROUP BY that would
        read every stored row of the patients.
        """
        rows: list[_Newest] = []
        wanted_codes = list(dict.fromkeys(codes))
        ids = list(dict.fromkeys(patient_ids))
        for start in range(0, len(ids), _MAX_PATIENTS_PER_STATEMENT):
            if not wanted_codes:
                break
            statement = _newest(ids[start : start + _MAX_PATIENTS_PER_STATEMENT], wanted_codes)
            result = await self._conn.execute(statement)
            rows.extend(
                (oid, pid, code, effective, value) for oid, pid, code, effective, value in result
            )
        keys = await patient_keys(self._conn, {r[1] for r in rows})
        components: dict[str, dict[str, float]] = {}
        panel_ids = [r[0] for r in rows if r[4] is None]
        if panel_ids:
            owner = {r[0]: r[1] for r in rows}
            query = select(
                observation_components.c.observation_id,
                observation_components.c.code,
                observation_components.c.value,
            ).where(observation_components.c.observation_id.in_(panel_ids))
            for observation_id, code, sealed in await self._conn.execute(query):
                value = keys[owner[observation_id]].open_float(
                    sealed, COMPONENT_VALUE, component_row(observation_id, code)
                )
                components.setdefault(observation_id, {})[code] = value
        latest: dict[tuple[str, str], LatestValue] = {}
        for observation_id, patient_id, code, effective, sealed in rows:
            values = (
                {code: keys[patient_id].open_float(sealed, VALUE, observation_id)}
                if sealed is not None
                else components.get(observation_id, {})
            )
            latest[(patient_id, code)] = LatestValue(patient_id, code, effective, values)
        return latest

    async def buckets(
        self,
        patient_id: str,
        code: str,
        *,
        component: str | None = None,
        origin: datetime,
        width: float,
    ) -> list[tuple[int, Bucket]]:
        """Values after `origin`, aggregated per bucket of `width` seconds: (index, bucket)
        pairs in time order, index 0 starting at `origin`; empty buckets are left out.

        Values are ciphertext, so the database cannot aggregate them: the range is read (one
        index range scan) and decrypted and bucketed here (benchmarks/encryption.py measures a
        month of minute readings).
        """
        # Epoch seconds computed by the database: no datetime object per row.
        epoch = epoch_seconds(self._conn.dialect.name, observations.c.effective)
        if component is None:
            query = select(observations.c.id, epoch, observations.c.value).where(
                observations.c.value.is_not(None)
            )
        else:
            query = (
                select(observations.c.id, epoch, observation_components.c.value)
                .join(
                    observation_components,
                    observation_components.c.observation_id == observations.c.id,
                )
                .where(observation_components.c.code == component)
            )
        query = query.where(
            observations.c.patient_id == patient_id,
            observations.c.code == code,
            observations.c.effective > origin,
        )
        rows = (await self._conn.execute(query)).all()
        if not rows:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        if component is None:
            values = key.open_floats([(oid, sealed) for oid, _, sealed in rows], VALUE)
        else:
            values = key.open_floats(
                [(component_row(oid, component), sealed) for oid, _, sealed in rows],
                COMPONENT_VALUE,
            )
        start = origin.timestamp()
        # One pass, per bucket: [count, sum of times, sum of values, low, high].
        totals: dict[int, list[float]] = {}
        floor = math.floor
        for (_, at, _), value in zip(rows, values, strict=True):
            index = floor((at - start) / width)
            bucket = totals.get(index)
            if bucket is None:
                totals[index] = [1, at, value, value, value]
                continue
            bucket[0] += 1
            bucket[1] += at
            bucket[2] += value
            if value < bucket[3]:
                bucket[3] = value
            elif value > bucket[4]:
                bucket[4] = value
        return [
            (index, Bucket(at=t / n, low=low, high=high, mean=v / n, count=int(n)))
            for index, (n, t, v, low, high) in sorted(totals.items())
        ]

    async def rolled_up(
        self,
        patient_id: str,
        code: str,
        *,
        component: str | None = None,
        resolution: int,
        since: datetime,
        until: datetime,
    ) -> list[RolledUp]:
        """The stored per-minute or per-hour buckets of one quantity (store/rollups.py)."""
        return await Rollups(self._conn).read(
            patient_id,
            code,
            component=component,
            resolution=resolution,
            since=since,
            until=until,
        )

    async def series(
        self,
        patient_id: str,
        code: str,
        *,
        component: str | None = None,
        after: datetime,
        until: datetime | None = None,
        received_after: datetime | None = None,
    ) -> list[tuple[datetime, float]]:
        """(effective, value) of one quantity, oldest first, for effective in (after, until]
        and, with `received_after`, only readings stored since then.

        `component` picks one quantity of a panel (systolic of a blood pressure).
        """
        if component is None:
            query = select(observations.c.id, observations.c.effective, observations.c.value).where(
                observations.c.value.is_not(None)
            )
        else:
            query = (
                select(observations.c.id, observations.c.effective, observation_components.c.value)
                .join(
                    observation_components,
                    observation_components.c.observation_id == observations.c.id,
                )
                .where(observation_components.c.code == component)
            )
        query = query.where(
            observations.c.patient_id == patient_id,
            observations.c.code == code,
            observations.c.effective > after,
        )
        if until is not None:
            query = query.where(observations.c.effective <= until)
        if received_after is not None:
            query = query.where(observations.c.received_at > received_after)
        result = (await self._conn.execute(query.order_by(observations.c.effective))).all()
        if not result:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        if component is None:
            values = key.open_floats([(oid, sealed) for oid, _, sealed in result], VALUE)
        else:
            values = key.open_floats(
                [(component_row(oid, component), sealed) for oid, _, sealed in result],
                COMPONENT_VALUE,
            )
        return [(at, value) for (_, at, _), value in zip(result, values, strict=True)]


def epoch_seconds(dialect: str, column: ColumnElement[datetime]) -> ColumnElement[float]:
    """Seconds since the Unix epoch, with their fraction."""
    if dialect == "postgresql":
        return type_coerce(extract("epoch", column), Float)
    # SQLite keeps naive UTC text; julianday() reads it to the microsecond.
    return (func.julianday(column) - 2440587.5) * 86400.0


_Newest = tuple[str, str, str, datetime, bytes | None]  # id, patient, code, effective, value


def _newest(
    patient_ids: Sequence[str], codes: Sequence[str]
) -> Select[str, str, str, datetime, bytes | None]:
    """The newest observation of each (patient, code): the pairs are the patients' rows
    crossed with the codes, each picking its newest observation id through the index."""
    code_rows = [select(literal(code, String).label("code")) for code in codes]
    wanted = (union_all(*code_rows) if len(code_rows) > 1 else code_rows[0]).subquery("wanted")
    candidate = observations.alias("candidate")
    newest_id = (
        select(candidate.c.id)
        .where(candidate.c.patient_id == patients.c.id, candidate.c.code == wanted.c.code)
        .order_by(candidate.c.effective.desc())
        .limit(1)
        .correlate(patients, wanted)
        .scalar_subquery()
    )
    pairs = (
        select(newest_id)
        .select_from(patients.join(wanted, true()))
        .where(patients.c.id.in_(patient_ids))
    )
    return select(
        observations.c.id,
        observations.c.patient_id,
        observations.c.code,
        observations.c.effective,
        observations.c.value,
    ).where(observations.c.id.in_(pairs))
