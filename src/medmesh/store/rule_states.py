"""Repository for rule states: each patient's sealed record of what the alert rules need from
recent readings (rules/state.py decides what is in it). Read and written with the patient's
alerts locked (`Alerts.lock_patient`), so `version` moves by one on every write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.database import cipher_of
from medmesh.store.schema import rule_states

# Sealed: it holds reading values. Bound to the patient's row, so it opens only as theirs.
_STATE = "rule_states.state"


class RuleStates:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def version(self, patient_id: str) -> int | None:
        """The stored state's version, without reading the state; None when there is none."""
        query = select(rule_states.c.version).where(rule_states.c.patient_id == patient_id)
        return (await self._conn.execute(query)).scalar_one_or_none()

    async def get(self, patient_id: str) -> tuple[int, bytes] | None:
        """The stored state, opened, with its version; None when there is none."""
        query = select(rule_states.c.version, rule_states.c.state).where(
            rule_states.c.patient_id == patient_id
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        key = await cipher_of(self._conn).key(patient_id)
        return row.version, key.open(row.state, _STATE, patient_id)

    async def put(self, patient_id: str, state: bytes, previous: int | None, at: datetime) -> int:
        """Store the state over version `previous` (None: there was none); returns the new
        version. The caller holds the patient's lock, so nobody wrote in between."""
        key = await cipher_of(self._conn).key(patient_id)
        sealed = key.seal(state, _STATE, patient_id)
        if previous is None:
            await self._conn.execute(
                rule_states.insert().values(
                    patient_id=patient_id, version=1, state=sealed, updated_at=at
                )
            )
            return 1
        await self._conn.execute(
            update(rule_states)
            .where(rule_states.c.patient_id == patient_id)
            .values(version=previous + 1, state=sealed, updated_at=at)
        )
        return previous + 1
