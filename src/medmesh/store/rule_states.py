"""Repository for rule states: each patient's sealed record of what the alert rules need from
recent readings (rules/state.py decides what is in it), as a head row and segments appended
by minute of reading time. Read and written with the patient's alerts locked
(`Alerts.lock_patient`), so `version` moves by one on every write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store._sql import any_of, delete_rows, insert_rows, update_rows
from medmesh.store.database import cipher_of
from medmesh.store.schema import rule_state_segments, rule_states

# Sealed: they hold reading values. Bound to the patient's row, so they open only as theirs.
_STATE = "rule_states.state"
_SEGMENT = "rule_state_segments.state"


@dataclass(frozen=True, slots=True)
class SegmentWrite:
    """A segment to store: its minute, its bytes (sealed here), and whether it replaces the
    minute's other segments."""

    bucket: datetime
    data: bytes
    whole: bool


# What every round of the rules runs, built once (store/_sql.py says why).
_segment = rule_state_segments.c
_HEADS = select(rule_states.c.patient_id, rule_states.c.version, rule_states.c.state).where(
    any_of(rule_states.c.patient_id, "ids")
)
_SEGMENTS_AFTER = (
    select(_segment.state)
    .where(_segment.patient_id == bindparam("p"), _segment.version > bindparam("after"))
    .order_by(_segment.version, _segment.bucket)
)
_DROP_ALL = delete(rule_state_segments).where(any_of(_segment.patient_id, "ids"))
_DROP_BEFORE = delete(rule_state_segments).where(
    _segment.patient_id == bindparam("b_patient"), _segment.bucket < bindparam("b_before")
)


@dataclass(frozen=True, slots=True)
class StatePut:
    """A patient's state to store over the version `previous` (None: none is stored yet):
    its head, the segments to write, the minutes before `drop_before` to delete, and whether
    every other segment goes (a full write)."""

    patient_id: str
    head: bytes
    segments: Sequence[SegmentWrite]
    previous: int | None
    drop_before: datetime | None = None
    replace_all: bool = False


class RuleStates:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def head(self, patient_id: str) -> tuple[int, bytes] | None:
        """The stored head, opened, with its version; None when there is none."""
        query = select(rule_states.c.version, rule_states.c.state).where(
            rule_states.c.patient_id == patient_id
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        key = await cipher_of(self._conn).key(patient_id)
        return row.version, key.open(row.state, _STATE, patient_id)

    async def heads(self, patient_ids: Sequence[str]) -> dict[str, tuple[int, bytes] | None]:
        """`head` of each patient, in one query (None for those without one)."""
        found: dict[str, tuple[int, bytes] | None] = dict.fromkeys(patient_ids)
        if not patient_ids:
            return found
        rows = (await self._conn.execute(_HEADS, {"ids": sorted(set(patient_ids))})).all()
        keys = await cipher_of(self._conn).keys_for({row.patient_id for row in rows})
        for row in rows:
            key = keys[row.patient_id]
            found[row.patient_id] = row.version, key.open(row.state, _STATE, row.patient_id)
        return found

    async def segments(self, patient_id: str, after: int = 0) -> list[bytes]:
        """The segments written after version `after`, opened, in the order written."""
        found = await self._conn.execute(_SEGMENTS_AFTER, {"p": patient_id, "after": after})
        rows = found.scalars().all()
        if not rows:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        return [key.open(sealed, _SEGMENT, patient_id) for sealed in rows]

    async def put_many(self, puts: Sequence[StatePut], at: datetime) -> dict[str, int]:
        """Store each patient's head and segments over its version `previous`; returns each
        patient's new version. A round of the rules stores all its patients' states in a few
        statements (each kind of change executed once for all of them), not two a patient.
        The caller holds the patients' locks, so nobody wrote in between."""
        if not puts:
            return {}
        cipher = cipher_of(self._conn)
        keys = await cipher.keys_for({p.patient_id for p in puts})
        for p in puts:
            if p.patient_id not in keys:
                keys[p.patient_id] = await cipher.key(p.patient_id)  # raises as it should
        versions = {p.patient_id: 1 if p.previous is None else p.previous + 1 for p in puts}
        rewritten = sorted(p.patient_id for p in puts if p.replace_all or p.previous is None)
        if rewritten:
            await self._conn.execute(_DROP_ALL, {"ids": rewritten})
        kept = [p for p in puts if not (p.replace_all or p.previous is None)]
        dropped = [
            {"b_patient": p.patient_id, "b_before": p.drop_before}
            for p in kept
            if p.drop_before is not None
        ]
        if dropped:
            await self._conn.execute(_DROP_BEFORE, dropped)
        # A batch of readings a minute apart touches a segment a minute: many rows a round,
        # each kind written in one statement (`delete_rows`, `insert_rows`).
        replaced = [
            {"patient_id": p.patient_id, "bucket": s.bucket}
            for p in kept
            for s in p.segments
            if s.whole
        ]
        await delete_rows(self._conn, rule_state_segments, replaced)
        rows = [
            {
                "patient_id": p.patient_id,
                "version": versions[p.patient_id],
                "bucket": s.bucket,
                "state": keys[p.patient_id].seal(s.data, _SEGMENT, p.patient_id),
            }
            for p in puts
            for s in p.segments
        ]
        await insert_rows(self._conn, rule_state_segments, rows)
        heads = [
            {
                "patient_id": p.patient_id,
                "version": versions[p.patient_id],
                "state": keys[p.patient_id].seal(p.head, _STATE, p.patient_id),
                "updated_at": at,
            }
            for p in puts
        ]
        new = [head for p, head in zip(puts, heads, strict=True) if p.previous is None]
        await insert_rows(self._conn, rule_states, new)
        moved = [head for p, head in zip(puts, heads, strict=True) if p.previous is not None]
        await update_rows(self._conn, rule_states, ("patient_id",), moved)
        return versions
