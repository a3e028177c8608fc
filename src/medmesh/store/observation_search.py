"""The FHIR Observation search's reads: filters on the indexed columns, several sort keys, a
count, a value filter applied after decryption, and the newest readings per code ($lastn).

Values are sealed per patient, so the database cannot compare them: a value filter decrypts
the rows the indexed filters (patient, code, time) leave, in chunks, and keeps the matches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, and_, bindparam, func, not_, or_, select, text, union_all
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from medmesh.domain.errors import InvalidSearch
from medmesh.domain.reading import MeasuredValue
from medmesh.domain.vocabulary import is_laboratory_test
from medmesh.store.observations import (
    VALUE,
    Observations,
    StoredObservation,
    TimeBound,
    _bound,
    _within,
    code_in,
    patient_keys,
    stored_from_row,
)
from medmesh.store.schema import observations

SortKey = Literal["effective", "received_at", "code", "patient_id", "device_id", "id"]
Access = tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...]

# A value filter decrypts at most this many rows; past it the search is refused as too costly
# (narrow it by patient, code or date).
VALUE_SCAN_LIMIT = 50_000
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class TimeGap:
    """The time `column` is outside [start, end) (FHIR's `ne` prefix)."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class ObservationFilter:
    """What an Observation search asks for. Every field narrows (AND); a tuple of ids or codes
    means any of them. `access`: what the caller may see (see ObservationQuery.access)."""

    access: Access | None = None
    patient_id: str | None = None
    ids: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    code_groups: tuple[tuple[str, ...], ...] = ()  # each group an "any of"; groups AND
    effective: tuple[TimeBound, ...] = ()
    effective_gaps: tuple[TimeGap, ...] = ()
    received: tuple[TimeBound, ...] = ()
    received_gaps: tuple[TimeGap, ...] = ()
    nothing: bool = False  # a filter nothing can match (e.g. status=cancelled)
    # Applied to decrypted rows after the indexed filters (value-quantity).
    keep: Callable[[StoredObservation], bool] | None = None


def _column(name: SortKey) -> ColumnElement[object]:
    return observations.c[name]


def _received(bound: TimeBound) -> ColumnElement[bool]:
    column = observations.c.received_at
    match bound.op:
        case "ge":
            return column >= bound.at
        case "gt":
            return column > bound.at
        case "le":
            return column <= bound.at
        case "lt":
            return column < bound.at


def _conditions(wanted: ObservationFilter) -> list[ColumnElement[bool]]:
    c = observations.c
    where: list[ColumnElement[bool]] = []
    if wanted.nothing:
        where.append(c.id.is_(None))  # the primary key is never NULL
    if wanted.patient_id is not None:
        where.append(c.patient_id == wanted.patient_id)
    if wanted.access is not None:
        where.append(_within(wanted.access))
    if wanted.ids:
        where.append(c.id.in_(wanted.ids))
    if wanted.device_ids:
        where.append(c.device_id.in_(wanted.device_ids))
    for group in wanted.code_groups:
        where.append(code_in(group))
    where.extend(_bound(b) for b in wanted.effective)
    where.extend(
        not_(and_(c.effective >= g.start, c.effective < g.end)) for g in wanted.effective_gaps
    )
    where.extend(_received(b) for b in wanted.received)
    where.extend(or_(c.received_at < g.start, c.received_at >= g.end) for g in wanted.received_gaps)
    return where


def _ordered(
    sql: Select[tuple[object, ...]], sort: Sequence[tuple[SortKey, bool]]
) -> Select[tuple[object, ...]]:
    keys = list(sort) or [("effective", False)]
    if all(name != "id" for name, _ in keys):
        keys.append(("id", keys[0][1]))  # a stable order, so pages neither repeat nor skip
    return sql.order_by(*(_column(n).desc() if desc else _column(n) for n, desc in keys))


def _after(position: tuple[datetime, str], descending: bool) -> ColumnElement[bool]:
    """Rows after the keyset `position` (effective, id) in the effective-time order. The
    plain range conjunct gives the planner an index range on (patient_id, [code,] effective)."""
    effective, ident = position
    c = observations.c
    if descending:
        return and_(c.effective <= effective, or_(c.effective < effective, c.id < ident))
    return and_(c.effective >= effective, or_(c.effective > effective, c.id > ident))


@dataclass(frozen=True, slots=True)
class ObservationPage:
    """A page of matches as the rows came from the database, for rendering straight from
    them: `values` holds each single-value row's opened value by id; `full` the rows that need
    more than their own columns (panels' components, laboratory findings) as StoredObservations.
    """

    rows: Sequence[RowMapping]
    values: dict[str, float]
    full: dict[str, StoredObservation]

    def __len__(self) -> int:
        return len(self.rows)

    def stored(self) -> list[StoredObservation]:
        """Every row as a StoredObservation (what callers other than the search want)."""
        return [
            self.full.get(r["id"])
            or stored_from_row(r, (MeasuredValue(r["code"], self.values[r["id"]], r["unit"]),))
            for r in self.rows
        ]


def _search_sql(
    wanted: ObservationFilter,
    sort: Sequence[tuple[SortKey, bool]],
    after: tuple[datetime, str] | None,
) -> Select[tuple[object, ...]]:
    where = _conditions(wanted)
    if after is not None:
        if any(name != "effective" for name, _ in sort):
            raise InvalidSearch("_cursor pages only a search sorted by date")
        where.append(_after(after, bool(sort) and sort[0][1]))
    return _ordered(select(observations).where(*where), sort)


async def search_observations(
    conn: AsyncConnection,
    wanted: ObservationFilter,
    sort: Sequence[tuple[SortKey, bool]] = (),
    limit: int = 50,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> list[StoredObservation]:
    """The matches in `sort` order (effective time, oldest first, by default). `after`: a
    keyset position (effective, id) to continue from; only with the effective-time order."""
    sql = _search_sql(wanted, sort, after)
    if wanted.keep is None:
        return (await _fetch_page(conn, sql.limit(limit).offset(offset))).stored()
    return (await _kept(Observations(conn), sql, wanted.keep, offset + limit))[offset:]


async def search_observation_page(
    conn: AsyncConnection,
    wanted: ObservationFilter,
    sort: Sequence[tuple[SortKey, bool]] = (),
    limit: int = 50,
    after: tuple[datetime, str] | None = None,
) -> ObservationPage:
    """As `search_observations` without a value filter or offset (the keyset-paged search),
    the page left as rows and opened values, for the FHIR search to render straight from."""
    if wanted.keep is not None:
        raise ValueError("a value filter needs search_observations")
    return await _fetch_page(conn, _search_sql(wanted, sort, after).limit(limit))


async def _fetch_page(conn: AsyncConnection, sql: Select[tuple[object, ...]]) -> ObservationPage:
    """The rows of `sql`, the single values opened in bulk per patient
    (`DataKey.open_floats`); panels and laboratory results (a few) through the repository's
    own path."""
    rows = (await conn.execute(sql)).mappings().all()
    laboratory = {code for code in {r["code"] for r in rows} if is_laboratory_test(code)}
    others: list[RowMapping] = []
    singles: dict[str, list[tuple[str, bytes]]] = defaultdict(list)  # by patient
    for r in rows:  # one pass: a 24-hour search's page holds 1,000 rows
        value = r["value"]
        if value is None or r["code"] in laboratory:
            others.append(r)
        else:
            singles[r["patient_id"]].append((r["id"], value))
    full = {o.id: o for o in await Observations(conn)._fetch_rows(others)}
    keys = await patient_keys(conn, set(singles))
    values: dict[str, float] = {}
    for patient_id, mine in singles.items():
        opened = keys[patient_id].open_floats(mine, VALUE)
        values.update(zip((ident for ident, _ in mine), opened, strict=True))
    return ObservationPage(rows, values, full)


async def _kept(
    repository: Observations,
    sql: Select[tuple[object, ...]],
    keep: Callable[[StoredObservation], bool],
    enough: int | None,
) -> list[StoredObservation]:
    """Decrypt the rows of `sql` a chunk at a time and keep the matches, until `enough`."""
    kept: list[StoredObservation] = []
    scanned = 0
    while enough is None or len(kept) < enough:
        chunk = await repository._fetch(sql.limit(_CHUNK).offset(scanned))
        kept.extend(o for o in chunk if keep(o))
        scanned += len(chunk)
        if len(chunk) < _CHUNK:
            break
        if scanned >= VALUE_SCAN_LIMIT:
            raise InvalidSearch(
                f"value-quantity would decrypt more than {VALUE_SCAN_LIMIT} readings; "
                "narrow the search by patient, code or date"
            )
    return kept if enough is None else kept[:enough]


async def count_observations(conn: AsyncConnection, wanted: ObservationFilter) -> int:
    """How many observations match (Bundle.total)."""
    if wanted.keep is None:
        counted = select(func.count()).select_from(observations).where(*_conditions(wanted))
        return int((await conn.execute(counted)).scalar_one())
    sql = _ordered(select(observations).where(*_conditions(wanted)), ())
    return len(await _kept(Observations(conn), sql, wanted.keep, None))


async def codes_held(conn: AsyncConnection, patient_ids: Sequence[str]) -> list[tuple[str, str]]:
    """Each (patient, code) the patients have readings of, vocabulary or not (a laboratory
    sends any LOINC code): a skip scan of the (patient, code, effective) index, one probe per
    code held rather than a read of the patient's whole history."""
    held: list[tuple[str, str]] = []
    for start in range(0, len(patient_ids), 100):
        chunk = list(patient_ids[start : start + 100])
        sql = text(
            """
            WITH RECURSIVE held(patient_id, code) AS (
                SELECT p.id, (SELECT MIN(o.code) FROM observations o WHERE o.patient_id = p.id)
                FROM patients p WHERE p.id IN :patients
                UNION ALL
                SELECT h.patient_id, (
                    SELECT MIN(o.code) FROM observations o
                    WHERE o.patient_id = h.patient_id AND o.code > h.code
                )
                FROM held h WHERE h.code IS NOT NULL
            )
            SELECT patient_id, code FROM held WHERE code IS NOT NULL
            """
        ).bindparams(bindparam("patients", expanding=True))
        rows = await conn.execute(sql, {"patients": chunk})
        held.extend((row.patient_id, row.code) for row in rows)
    return sorted(held)


async def latest_per_code(
    conn: AsyncConnection,
    wanted: ObservationFilter,
    pairs: Sequence[tuple[str, str]],
    per_code: int,
) -> list[StoredObservation]:
    """For each (patient, code) pair, its `per_code` newest matches ($lastn): one index range
    probe (patient, code, effective) per pair, sent as one statement per 100 pairs."""
    found: list[StoredObservation] = []
    repository = Observations(conn)
    conditions = _conditions(wanted)
    for start in range(0, len(pairs), 100):
        parts = [
            select(observations.c.id)
            .where(
                observations.c.patient_id == patient_id,
                observations.c.code == code,
                *conditions,
            )
            .order_by(observations.c.effective.desc(), observations.c.id.desc())
            .limit(per_code)
            .subquery()
            .select()
            for patient_id, code in pairs[start : start + 100]
        ]
        if not parts:
            continue
        ids = union_all(*parts).subquery()
        sql = select(observations).where(observations.c.id.in_(select(ids.c.id)))
        found.extend(await repository._fetch(sql))
    found.sort(key=lambda o: (o.patient_id, o.code, -o.effective.timestamp(), o.id))
    return found
