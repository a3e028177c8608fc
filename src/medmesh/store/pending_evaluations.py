"""Repository for pending evaluations: committed batches whose after-commit work has not run,
each with its patients and their readings in it (`of_patients`)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store._sql import any_of, insert_rows
from medmesh.store.schema import pending_evaluation_patients, pending_evaluations


@dataclass(frozen=True, slots=True)
class PendingEvaluation:
    id: str
    observation_ids: tuple[str, ...]
    created_at: datetime
    attempts: int


# What every batch and every round runs, built once (store/_sql.py says why).
_ADD = insert(pending_evaluations)
_OF_PATIENTS = select(
    pending_evaluation_patients.c.pending_id,
    pending_evaluation_patients.c.patient_id,
    pending_evaluation_patients.c.observation_ids,
).where(any_of(pending_evaluation_patients.c.patient_id, "ids"))
_REMOVE_MANY = delete(pending_evaluations).where(any_of(pending_evaluations.c.id, "ids"))


class PendingEvaluations:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, by_patient: Mapping[str, Sequence[str]], at: datetime) -> str:
        """A pending batch of the observations `by_patient` holds (patient id → ids)."""
        pending_id = str(uuid.uuid4())
        observation_ids = [oid for ids in by_patient.values() for oid in ids]
        await self._conn.execute(
            _ADD,
            {
                "id": pending_id,
                "observation_ids": orjson.dumps(observation_ids).decode(),
                "created_at": at,
                "attempts": 0,
            },
        )
        await insert_rows(
            self._conn,
            pending_evaluation_patients,
            [
                {
                    "pending_id": pending_id,
                    "patient_id": patient_id,
                    "observation_ids": orjson.dumps(list(ids)).decode(),
                }
                for patient_id, ids in by_patient.items()
            ],
        )
        return pending_id

    async def of_patients(
        self, patient_ids: Sequence[str], excluding: Collection[str] = ()
    ) -> list[tuple[str, str, list[str]]]:
        """(pending id, patient id, observation ids) of every pending batch (committed, not
        judged yet, by any process) holding readings of `patient_ids`, but those `excluding`
        names (a process's own batches queued to be judged: most of what is pending), whose
        lists of ids are not decoded. Left out here, not in the query: `pending_id <> ALL`
        of a bound array compares each row with every element in PostgreSQL's generic plan
        (3.7 ms against 0.6 ms for 2,400 rows and 150 ids), and the round holds its patients'
        locks meanwhile."""
        if not patient_ids:
            return []
        rows = await self._conn.execute(_OF_PATIENTS, {"ids": list(patient_ids)})
        return [
            (pending_id, patient_id, orjson.loads(ids))
            for pending_id, patient_id, ids in rows
            if pending_id not in excluding
        ]

    async def remove(self, pending_id: str) -> None:
        await self._conn.execute(
            delete(pending_evaluations).where(pending_evaluations.c.id == pending_id)
        )

    async def remove_many(self, pending_ids: Sequence[str]) -> None:
        if pending_ids:
            await self._conn.execute(_REMOVE_MANY, {"ids": list(pending_ids)})

    async def failed(self, pending_id: str) -> None:
        """Count a failed attempt; the row stays for the next recovery round."""
        await self._conn.execute(
            update(pending_evaluations)
            .where(pending_evaluations.c.id == pending_id)
            .values(attempts=pending_evaluations.c.attempts + 1)
        )

    async def not_newer_than(self, moment: datetime, limit: int = 100) -> list[PendingEvaluation]:
        rows = await self._conn.execute(
            select(pending_evaluations)
            .where(pending_evaluations.c.created_at <= moment)
            .order_by(pending_evaluations.c.created_at)
            .limit(limit)
        )
        return [
            PendingEvaluation(
                r.id, tuple(orjson.loads(r.observation_ids)), r.created_at, r.attempts
            )
            for r in rows
        ]
