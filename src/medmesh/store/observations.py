"""Repository for observations: compact rows written in batches, read by patient/code/time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from sqlalchemy import and_, delete, false, literal, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from medmesh.crypto.envelope import DataKey
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.errors import NotFound
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import (
    OTHER_LABORATORY_CODES,
    VOCABULARY_CODES,
    is_laboratory_test,
)
from medmesh.store import rollups
from medmesh.store._sql import any_of, insert_ignoring_duplicates, unnested
from medmesh.store.database import cipher_of
from medmesh.store.lab_results import LabFindings, LabResults
from medmesh.store.observation_owners import hold_owners
from medmesh.store.schema import observation_components, observations, observations_staging

Comparator = Literal["ge", "gt", "le", "lt"]

# Columns of sealed values (their ciphertext is bound to the column, the patient and the row).
VALUE = "observations.value"
COMPONENT_VALUE = "observation_components.value"


# Batches of at least this many rows go through COPY on PostgreSQL; smaller ones are cheaper
# as one INSERT.
COPY_FROM_ROWS = 20
_COLUMNS = [
    "id",
    "patient_id",
    "device_id",
    "message_id",
    "code",
    "effective",
    "value",
    "unit",
    "received_at",
]


def _move_staged() -> Any:
    """Empty the staging table into observations, skipping rows stored already, in one
    statement: the ids inserted come back."""
    moved = delete(observations_staging).returning(*observations_staging.c).cte("moved")
    return (
        postgresql.insert(observations)
        .from_select(_COLUMNS, select(*(moved.c[c] for c in _COLUMNS)))
        .on_conflict_do_nothing()
        .returning(observations.c.id)
        .add_cte(moved)
    )


_MOVE_STAGED = _move_staged()


def _seal_values(readings: Sequence[Reading], keys: dict[str, DataKey]) -> dict[str, bytes]:
    """observation id → sealed value of each single-value reading, sealed per patient in bulk."""
    by_patient: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in readings:
        if not r.measure.is_panel:
            by_patient[r.patient_id].append((r.observation_id, r.values[0].value))
    sealed: dict[str, bytes] = {}
    for patient_id, pairs in by_patient.items():
        blobs = keys[patient_id].seal_floats(pairs, VALUE)
        sealed.update(zip((oid for oid, _ in pairs), blobs, strict=True))
    return sealed


def _seal_components(reading: Reading, keys: dict[str, DataKey]) -> list[bytes]:
    oid = reading.observation_id
    return keys[reading.patient_id].seal_floats(
        [(component_row(oid, v.code), v.value) for v in reading.values], COMPONENT_VALUE
    )


def observation_rows(
    readings: Sequence[Reading], sealed: dict[str, bytes], received_at: datetime
) -> list[tuple[object, ...]]:
    """The readings as `observations` rows, in `_COLUMNS` order, with their sealed single
    values (`sealed`, by observation id; a panel has none: its values are components)."""
    return [
        (
            r.observation_id,
            r.patient_id,
            r.device_id,
            r.message_id,
            r.measure.code,
            r.effective,
            sealed.get(r.observation_id),
            None if r.measure.is_panel else r.values[0].unit,
            received_at,
        )
        for r in readings
    ]


def component_row(observation_id: str, code: str) -> str:
    return f"{observation_id}/{code}"


@dataclass(frozen=True, slots=True)
class TimeBound:
    """One side of a time range: effective `op` `at` (e.g. ge 2026-11-25T00:00Z)."""

    op: Comparator
    at: datetime


@dataclass(frozen=True, slots=True)
class StoredObservation:
    id: str
    patient_id: str
    device_id: str
    message_id: str
    code: str
    effective: datetime
    values: tuple[MeasuredValue, ...]
    received_at: datetime
    lab: LabFindings | None = None  # laboratory results: reference range, interpretation


def stored_from_row(
    row: RowMapping, values: tuple[MeasuredValue, ...], lab: LabFindings | None = None
) -> StoredObservation:
    """An observation row (every column) with its opened values."""
    return StoredObservation(
        id=row["id"],
        patient_id=row["patient_id"],
        device_id=row["device_id"],
        message_id=row["message_id"],
        code=row["code"],
        effective=row["effective"],
        values=values,
        received_at=row["received_at"],
        lab=lab,
    )


@dataclass(frozen=True, slots=True)
class ObservationQuery:
    patient_id: str | None = None
    # What the caller may see, when limited: groups of (patient ids, codes or None for any).
    access: tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...] | None = None
    codes: tuple[str, ...] = ()
    bounds: tuple[TimeBound, ...] = ()
    newest_first: bool = False
    limit: int = 50
    offset: int = 0


def _bound(bound: TimeBound) -> ColumnElement[bool]:
    column = observations.c.effective
    match bound.op:
        case "ge":
            return column >= bound.at
        case "gt":
            return column > bound.at
        case "le":
            return column <= bound.at
        case "lt":
            return column < bound.at


def code_in(codes: Sequence[str]) -> ColumnElement[bool]:
    """Observations stored under one of `codes`; OTHER_LABORATORY_CODES among them stands for
    every code outside the vocabulary (laboratory results of any LOINC code)."""
    column = observations.c.code
    known = [c for c in codes if c != OTHER_LABORATORY_CODES]
    if len(known) == len(codes):
        return column.in_(known)
    return or_(column.in_(known), column.not_in(sorted(VOCABULARY_CODES)))


def _within(
    access: tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...],
) -> ColumnElement[bool]:
    groups: list[ColumnElement[bool]] = []
    for patient_ids, codes in access:
        group: ColumnElement[bool] = observations.c.patient_id.in_(patient_ids)
        if codes is not None:
            group = and_(group, code_in(codes))
        groups.append(group)
    return or_(false(), *groups)


# Built once (store/_sql.py says why).
_EXISTING = select(observations.c.id).where(any_of(observations.c.id, "ids"))
_BY_IDS = (
    select(observations)
    .where(any_of(observations.c.id, "ids"))
    .order_by(observations.c.effective, observations.c.id)
)
# PostgreSQL's INSERT … ON CONFLICT DO NOTHING RETURNING id (SQLite does without RETURNING),
# of the rows as arrays: one text whatever their number.
_INSERTED_IDS = (
    postgresql.insert(observations)
    .from_select(_COLUMNS, unnested(observations, _COLUMNS))
    .on_conflict_do_nothing()
    .returning(observations.c.id)
)


class Observations:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return set((await self._conn.execute(_EXISTING, {"ids": list(ids)})).scalars())

    async def add_batch(self, readings: Sequence[Reading], received_at: datetime) -> set[str]:
        """Insert readings; one already stored (same device and message id) is left as it is.

        Returns the ids of the rows this call inserted, so a concurrent resend of the same
        batch is reported as duplicates rather than as stored twice. Values are sealed in bulk
        per patient; rows go in as plain tuples (PostgreSQL: COPY, see `_copy_new`; SQLite: one
        executemany).
        """
        if not readings:
            return set()
        patient_ids = {r.patient_id for r in readings}
        keys = await patient_keys(self._conn, patient_ids)
        await hold_owners(self._conn, patient_ids, {r.device_id for r in readings})
        rows = observation_rows(readings, _seal_values(readings, keys), received_at)
        if self._conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS:
            inserted = await self._copy_new(rows)
        else:
            inserted = await self._insert_new(rows)
        components = [
            {
                "observation_id": r.observation_id,
                "code": v.code,
                "value": value,
                "unit": v.unit,
            }
            for r in readings
            if r.measure.is_panel and r.observation_id in inserted
            for v, value in zip(r.values, _seal_components(r, keys), strict=True)
        ]
        if components:
            await self._conn.execute(
                insert_ignoring_duplicates(self._conn, observation_components), components
            )
        # The rollup hook: the readings this call stored, in this transaction.
        await rollups.add_readings(
            self._conn, [r for r in readings if r.observation_id in inserted]
        )
        return inserted

    async def _insert_new(self, rows: Sequence[tuple[object, ...]]) -> set[str]:
        if self._conn.dialect.name == "sqlite":
            # One writer (BEGIN IMMEDIATE): what is not there now is inserted by this call, and
            # a plain executemany needs no RETURNING.
            existing = await self.existing_ids([str(row[0]) for row in rows])
            fresh = [
                dict(zip(_COLUMNS, row, strict=True)) for row in rows if row[0] not in existing
            ]
            if fresh:
                await self._conn.execute(
                    insert_ignoring_duplicates(self._conn, observations), fresh
                )
            return {str(row["id"]) for row in fresh}
        if not rows:
            return set()
        # The rows, one list a column (`unnested`): transposed, not made into dicts first.
        arrays = dict(zip(_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        result = await self._conn.execute(_INSERTED_IDS, arrays)
        return set(result.scalars())

    async def _copy_new(self, rows: Sequence[tuple[object, ...]]) -> set[str]:
        """PostgreSQL: COPY the rows straight into observations inside a savepoint; if one is
        stored already (a redelivery) the COPY fails at it and the savepoint undoes it, and the
        rows go the careful way (`_copy_through_staging`).

        Nearly every batch holds only new readings, and the staging table's extra write and
        `INSERT … SELECT … ON CONFLICT` cost PostgreSQL about a third more CPU a row
        (docs/benchmarks.md, "PostgreSQL's part of a reading")."""
        driver = await self._driver()
        try:
            async with driver.transaction():  # a savepoint: the outer transaction is open
                await driver.copy_records_to_table(
                    observations.name, records=rows, columns=_COLUMNS
                )
        except asyncpg.UniqueViolationError:
            return await self._copy_through_staging(rows)
        return {str(row[0]) for row in rows}

    async def _copy_through_staging(self, rows: Sequence[tuple[object, ...]]) -> set[str]:
        """COPY the rows into the connection's staging table (schema.py; emptied at commit),
        then move those not stored yet with one INSERT … SELECT … ON CONFLICT DO NOTHING."""
        driver = await self._driver()
        await driver.copy_records_to_table(
            observations_staging.name, records=rows, columns=_COLUMNS
        )
        result = await self._conn.execute(_MOVE_STAGED)
        return set(result.scalars())

    async def _driver(self) -> asyncpg.Connection:
        """The asyncpg connection under this one, in its transaction."""
        raw = await self._conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        if not driver.is_in_transaction():
            # SQLAlchemy begins its transaction at the first statement: begin it now, or a
            # COPY would commit on its own (and the staging table, ON COMMIT DELETE ROWS,
            # would be empty again before the move).
            await self._conn.execute(select(literal(1)))
        return driver

    async def get(self, observation_id: str) -> StoredObservation:
        found = await self._fetch(select(observations).where(observations.c.id == observation_id))
        if not found:
            raise NotFound("Observation not found")
        return found[0]

    async def get_many(self, observation_ids: Sequence[str]) -> list[StoredObservation]:
        """The stored observations among `observation_ids`, oldest first (unknown ids skipped)."""
        if not observation_ids:
            return []
        rows = await self._conn.execute(_BY_IDS, {"ids": list(observation_ids)})
        return await self._fetch_rows(rows.mappings().all())

    async def search(self, query: ObservationQuery) -> list[StoredObservation]:
        sql = select(observations)
        if query.patient_id is not None:
            sql = sql.where(observations.c.patient_id == query.patient_id)
        if query.codes:
            sql = sql.where(code_in(query.codes))
        if query.access is not None:
            sql = sql.where(_within(query.access))
        for bound in query.bounds:
            sql = sql.where(_bound(bound))
        if query.newest_first:
            sql = sql.order_by(observations.c.effective.desc(), observations.c.id.desc())
        else:
            sql = sql.order_by(observations.c.effective, observations.c.id)
        return await self._fetch(sql.limit(query.limit).offset(query.offset))

    async def _fetch(self, sql: ColumnElement[bool] | object) -> list[StoredObservation]:
        rows = (await self._conn.execute(sql)).mappings().all()  # type: ignore[call-overload]
        return await self._fetch_rows(rows)

    async def _fetch_rows(self, rows: Sequence[RowMapping]) -> list[StoredObservation]:
        """Observation rows (every column) decrypted, with their panels' components."""
        if not rows:
            return []
        keys = await patient_keys(self._conn, {r["patient_id"] for r in rows})
        owner = {r["id"]: r["patient_id"] for r in rows}
        panel_ids = [r["id"] for r in rows if r["value"] is None]
        parts: dict[str, list[MeasuredValue]] = defaultdict(list)
        if panel_ids:
            component_rows = await self._conn.execute(
                select(observation_components)
                .where(observation_components.c.observation_id.in_(panel_ids))
                .order_by(observation_components.c.observation_id, observation_components.c.code)
            )
            for c in component_rows.mappings():
                oid = c["observation_id"]
                value = keys[owner[oid]].open_float(
                    c["value"], COMPONENT_VALUE, component_row(oid, c["code"])
                )
                parts[oid].append(MeasuredValue(c["code"], value, c["unit"]))
        lab = await LabResults(self._conn).for_observations(
            {r["id"]: r["patient_id"] for r in rows if is_laboratory_test(r["code"])}
        )
        return [
            stored_from_row(
                r,
                (
                    (
                        MeasuredValue(
                            r["code"],
                            keys[r["patient_id"]].open_float(r["value"], VALUE, r["id"]),
                            r["unit"],
                        ),
                    )
                    if r["value"] is not None
                    else tuple(parts[r["id"]])
                ),
                lab.get(r["id"]),
            )
            for r in rows
        ]


@dataclass(frozen=True, slots=True)
class ExportWindow:
    """Which of a patient's observations an export takes: effective time bounds, and
    received at or after `received_from` and before `received_until` (the export's snapshot)."""

    bounds: tuple[TimeBound, ...] = ()
    received_from: datetime | None = None
    received_until: datetime | None = None


async def observations_after(
    conn: AsyncConnection,
    patient_id: str,
    window: ExportWindow,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredObservation]:
    """One patient's observations ordered by (effective, id), the `limit` after `after`.

    Keyset paging: each page is an index range scan, however deep into a year of data.
    """
    sql = select(observations).where(observations.c.patient_id == patient_id)
    for bound in window.bounds:
        sql = sql.where(_bound(bound))
    if window.received_from is not None:
        sql = sql.where(observations.c.received_at >= window.received_from)
    if window.received_until is not None:
        sql = sql.where(observations.c.received_at < window.received_until)
    if after is not None:
        effective, ident = after
        # The `>=` conjunct gives the planner an index range on (patient_id, effective); the
        # OR alone makes SQLite scan the patient's rows from the first on every page.
        sql = sql.where(
            observations.c.effective >= effective,
            or_(observations.c.effective > effective, observations.c.id > ident),
        )
    sql = sql.order_by(observations.c.effective, observations.c.id).limit(limit)
    return await Observations(conn)._fetch(sql)


async def patient_keys(conn: AsyncConnection, patient_ids: set[str]) -> dict[str, DataKey]:
    """The patients' data keys, fetched together; DataKeyDestroyed if one has none (erased:
    e.g. rows read from a copy of the database taken before their erasure)."""
    keys = await cipher_of(conn).keys_for(patient_ids)
    if len(keys) != len(patient_ids):
        raise DataKeyDestroyed("a patient's data key does not exist (erased?)")
    return keys
