"""Repository for care plans: threshold overrides and the reading schedule as JSON, one row a
patient. A patient without a row has the default plan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.care_plans import CarePlan, EscalationStep, Schedule
from medmesh.store._sql import any_of, upsert
from medmesh.store.schema import care_plans


def _plan(row: RowMapping) -> CarePlan:
    schedule: dict[str, Any] = orjson.loads(row["schedule"])
    return CarePlan(
        patient_id=row["patient_id"],
        threshold_overrides=orjson.loads(row["thresholds"]),
        schedule=Schedule(
            per_day={k: int(v) for k, v in schedule.get("per_day", {}).items()},
            timezone=schedule.get("timezone", "UTC"),
        ),
        primary_clinician=row["primary_clinician"],
        escalation_clinician=row["escalation_clinician"],
        escalation_chain=_chain(row["escalation_chain"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _chain(text: str | None) -> tuple[EscalationStep, ...]:
    steps: list[dict[str, Any]] = orjson.loads(text) if text else []
    return tuple(
        EscalationStep(s["to"], s.get("ref") or s.get("user") or s.get("team"), s.get("after", {}))
        for s in steps
    )


def chain_json(chain: Sequence[EscalationStep]) -> list[dict[str, Any]]:
    return [{"to": s.to, "ref": s.ref, "after": dict(s.after)} for s in chain]


# Read by every round of the rules, built once (store/_sql.py says why).
_OF_PATIENTS = select(care_plans).where(any_of(care_plans.c.patient_id, "ids"))


class CarePlans:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, patient_id: str) -> CarePlan:
        """The patient's plan; the default plan (no overrides, no schedule) if none is stored."""
        found = await self.for_patients([patient_id])
        return found.get(patient_id, CarePlan(patient_id))

    async def for_patients(self, patient_ids: Sequence[str]) -> dict[str, CarePlan]:
        """Stored plans of these patients (patients without one are left out)."""
        if not patient_ids:
            return {}
        rows = await self._conn.execute(_OF_PATIENTS, {"ids": list(patient_ids)})
        return {p.patient_id: p for p in map(_plan, rows.mappings())}

    async def scheduled(self) -> list[CarePlan]:
        """Stored plans that expect readings on a schedule."""
        rows = (await self._conn.execute(select(care_plans))).mappings()
        return [plan for plan in map(_plan, rows) if plan.schedule.per_day]

    async def put(self, plan: CarePlan, at: datetime, by: str) -> None:
        values = {
            "patient_id": plan.patient_id,
            "thresholds": orjson.dumps(dict(plan.threshold_overrides)).decode(),
            "schedule": orjson.dumps(
                {"per_day": dict(plan.schedule.per_day), "timezone": plan.schedule.timezone}
            ).decode(),
            "primary_clinician": plan.primary_clinician,
            "escalation_clinician": plan.escalation_clinician,
            "escalation_chain": orjson.dumps(chain_json(plan.escalation_chain)).decode()
            if plan.escalation_chain
            else None,
            "updated_at": at,
            "updated_by": by,
        }
        await self._conn.execute(
            upsert(self._conn, care_plans, ("patient_id",), tuple(values)[1:]), values
        )
