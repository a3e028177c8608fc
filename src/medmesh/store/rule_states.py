"""Repository for rule states: each patient's sealed record of what the alert rules need from
recent readings (rules/state.py decides what is in it), as a head row and segments appended
by minute of reading time. Read and written with the patient's alerts locked
(`Alerts.lock_patient`), so `version` moves by one on every write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

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
        query = select(rule_states.c.patient_id, rule_states.c.version, rule_states.c.state).where(
            rule_states.c.patient_id.in_(sorted(set(patient_ids)))
        )
        rows = (await self._conn.execute(query)).all()
        keys = await cipher_of(self._conn).keys_for({row.patient_id for row in rows})
        for row in rows:
            key = keys[row.patient_id]
            found[row.patient_id] = row.version, key.open(row.state, _STATE, row.patient_id)
        return found

    async def segments(self, patient_id: str, after: int = 0) -> list[bytes]:
        """The segments written after version `after`, opened, in the order written."""
        query = (
            select(rule_state_segments.c.state)
            .where(
                rule_state_segments.c.patient_id == patient_id,
                rule_state_segments.c.version > after,
            )
            .order_by(rule_state_segments.c.version, rule_state_segments.c.bucket)
        )
        rows = (await self._conn.execute(query)).scalars().all()
        if not rows:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        return [key.open(sealed, _SEGMENT, patient_id) for sealed in rows]

    async def put(
        self,
        patient_id: str,
        head: bytes,
        segments: Sequence[SegmentWrite],
        previous: int | None,
        at: datetime,
        *,
        drop_before: datetime | None = None,
        replace_all: bool = False,
    ) -> int:
        """Store a head and segments over version `previous` (None: there was none); returns
        the new version. The caller holds the patient's lock, so nobody wrote in between."""
        key = await cipher_of(self._conn).key(patient_id)
        version = 1 if previous is None else previous + 1
        mine = rule_state_segments.c.patient_id == patient_id
        if replace_all or previous is None:
            await self._conn.execute(delete(rule_state_segments).where(mine))
        else:
            if drop_before is not None:
                await self._conn.execute(
                    delete(rule_state_segments).where(
                        mine, rule_state_segments.c.bucket < drop_before
                    )
                )
            wholes = [s.bucket for s in segments if s.whole]
            if wholes:
                await self._conn.execute(
                    delete(rule_state_segments).where(
                        mine, rule_state_segments.c.bucket.in_(wholes)
                    )
                )
        if segments:
            await self._conn.execute(
                insert(rule_state_segments),
                [
                    {
                        "patient_id": patient_id,
                        "version": version,
                        "bucket": s.bucket,
                        "state": key.seal(s.data, _SEGMENT, patient_id),
                    }
                    for s in segments
                ],
            )
        sealed = key.seal(head, _STATE, patient_id)
        if previous is None:
            await self._conn.execute(
                rule_states.insert().values(
                    patient_id=patient_id, version=version, state=sealed, updated_at=at
                )
            )
        else:
            await self._conn.execute(
                update(rule_states)
                .where(rule_states.c.patient_id == patient_id)
                .values(version=version, state=sealed, updated_at=at)
            )
        return version
