"""Merging two patient records (HL7 ADT A40) and undoing a merge.

A merge moves the merged patient's readings (re-sealed with the survivor's key), device
assignments and consents to the survivor and records exactly what moved, so an undo moves
those rows, and only those, back. The merged patient's row and key stay, marked with
`merged_into`: messages naming them reach the survivor, and the undo can re-seal with it.
Alerts, rule state, care plans, care teams and messages stay with the merged record.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from medmesh.crypto.envelope import DataKey
from medmesh.domain.errors import Conflict, NotFound
from medmesh.store import rollup_backfill
from medmesh.store.database import cipher_of
from medmesh.store.lab_results import DETAIL
from medmesh.store.observation_owners import hold_owners
from medmesh.store.observations import COMPONENT_VALUE, VALUE, component_row
from medmesh.store.schema import (
    consents,
    device_assignments,
    lab_result_details,
    observation_components,
    observations,
    patient_merges,
    patients,
    rule_state_segments,
    rule_states,
)


@dataclass(frozen=True, slots=True)
class PatientMerge:
    id: str
    survivor_id: str
    merged_id: str
    merged_at: datetime
    merged_by: str
    undone_at: datetime | None
    observations: tuple[str, ...]
    assignments: tuple[tuple[str, str], ...]  # (device id, start as ISO text)
    consents: tuple[str, ...]


class PatientMerges:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def survivor_of(self, patient_id: str) -> str:
        """The patient a record now lives on: itself, or the survivor of its merges."""
        seen = {patient_id}
        while True:
            query = select(patients.c.merged_into).where(patients.c.id == patient_id)
            target = (await self._conn.execute(query)).scalar_one_or_none()
            if target is None or target in seen:
                return patient_id
            seen.add(target)
            patient_id = target

    async def merge(
        self, survivor_id: str, merged_id: str, *, at: datetime, by: str
    ) -> PatientMerge:
        if survivor_id == merged_id:
            raise Conflict("a patient cannot be merged into itself")
        if await self.survivor_of(survivor_id) != survivor_id:
            raise Conflict("the surviving patient was itself merged into another")
        if await self.survivor_of(merged_id) != merged_id:
            raise Conflict("this patient was merged already")
        moved_observations = await self._ids(
            observations.c.id, observations.c.patient_id, merged_id
        )
        moved_assignments = [
            (device, start.isoformat())
            for device, start in (
                await self._conn.execute(
                    select(device_assignments.c.device_id, device_assignments.c.start).where(
                        device_assignments.c.patient_id == merged_id
                    )
                )
            ).all()
        ]
        moved_consents = await self._ids(consents.c.id, consents.c.patient_id, merged_id)
        record = PatientMerge(
            str(uuid.uuid4()),
            survivor_id,
            merged_id,
            at,
            by,
            None,
            tuple(moved_observations),
            tuple(moved_assignments),
            tuple(moved_consents),
        )
        await self._move(record, merged_id, survivor_id)
        await self._conn.execute(
            update(patients).where(patients.c.id == merged_id).values(merged_into=survivor_id)
        )
        await self._conn.execute(
            patient_merges.insert().values(
                id=record.id,
                survivor_id=survivor_id,
                merged_id=merged_id,
                merged_at=at,
                merged_by=by[:200],
                moved=orjson.dumps(
                    {
                        "observations": record.observations,
                        "assignments": record.assignments,
                        "consents": record.consents,
                    }
                ).decode(),
            )
        )
        return record

    async def undo(self, merge_id: str, *, at: datetime) -> PatientMerge:
        """Move back exactly what the merge moved; readings that arrived for the survivor
        since stay with the survivor."""
        record = await self.get(merge_id)
        if record.undone_at is not None:
            raise Conflict("this merge was undone already")
        await self._move(record, record.survivor_id, record.merged_id)
        await self._conn.execute(
            update(patients).where(patients.c.id == record.merged_id).values(merged_into=None)
        )
        await self._conn.execute(
            update(patient_merges).where(patient_merges.c.id == merge_id).values(undone_at=at)
        )
        return await self.get(merge_id)

    async def get(self, merge_id: str) -> PatientMerge:
        row = (
            (
                await self._conn.execute(
                    select(patient_merges).where(patient_merges.c.id == merge_id)
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NotFound("no such merge")
        moved = orjson.loads(row["moved"])
        return PatientMerge(
            row["id"],
            row["survivor_id"],
            row["merged_id"],
            row["merged_at"],
            row["merged_by"],
            row["undone_at"],
            tuple(moved["observations"]),
            tuple((d, s) for d, s in moved["assignments"]),
            tuple(moved["consents"]),
        )

    async def _ids(
        self, id_column: ColumnElement[str], patient_column: ColumnElement[str], patient_id: str
    ) -> list[str]:
        query = select(id_column).where(patient_column == patient_id)
        return [str(i) for i in (await self._conn.execute(query)).scalars()]

    async def _move(self, record: PatientMerge, source: str, target: str) -> None:
        keys = await cipher_of(self._conn).keys_for({source, target})
        # The readings' new owner is held as storing readings holds it (no foreign key).
        await hold_owners(self._conn, {target}, ())
        old, new = keys[source], keys[target]
        await self._reseal_observations(record.observations, source, old, new, target)
        # What was computed from the readings follows them: both records' chart rollups are
        # rebuilt, and their rule states dropped, so the next batch rebuilds them from history.
        for patient_id in (source, target):
            await rollup_backfill.rebuild(self._conn, patient_id)
        for table in (rule_state_segments, rule_states):
            await self._conn.execute(delete(table).where(table.c.patient_id.in_([source, target])))
        for device, start in record.assignments:
            await self._conn.execute(
                update(device_assignments)
                .where(
                    device_assignments.c.device_id == device,
                    device_assignments.c.start == datetime.fromisoformat(start),
                    device_assignments.c.patient_id == source,
                )
                .values(patient_id=target)
            )
        if record.consents:
            await self._conn.execute(
                update(consents)
                .where(consents.c.id.in_(record.consents), consents.c.patient_id == source)
                .values(patient_id=target)
            )

    async def _reseal_observations(
        self, ids: Sequence[str], source: str, old: DataKey, new: DataKey, target: str
    ) -> None:
        if not ids:
            return
        rows = (
            await self._conn.execute(
                select(observations.c.id, observations.c.value).where(
                    observations.c.id.in_(list(ids)), observations.c.patient_id == source
                )
            )
        ).all()
        for oid, value in rows:
            sealed = (
                None
                if value is None
                else new.seal_float(old.open_float(value, VALUE, oid), VALUE, oid)
            )
            await self._conn.execute(
                update(observations)
                .where(observations.c.id == oid)
                .values(patient_id=target, value=sealed)
            )
        moved = [oid for oid, _ in rows]
        parts = (
            await self._conn.execute(
                select(observation_components).where(
                    observation_components.c.observation_id.in_(moved)
                )
            )
        ).mappings()
        for part in list(parts):
            row = component_row(part["observation_id"], part["code"])
            value = new.seal_float(
                old.open_float(part["value"], COMPONENT_VALUE, row), COMPONENT_VALUE, row
            )
            await self._conn.execute(
                update(observation_components)
                .where(
                    observation_components.c.observation_id == part["observation_id"],
                    observation_components.c.code == part["code"],
                )
                .values(value=value)
            )
        details = (
            await self._conn.execute(
                select(lab_result_details).where(lab_result_details.c.observation_id.in_(moved))
            )
        ).mappings()
        for detail in list(details):
            oid = detail["observation_id"]
            text = new.seal_text(old.open_text(detail["detail"], DETAIL, oid), DETAIL, oid)
            await self._conn.execute(
                update(lab_result_details)
                .where(lab_result_details.c.observation_id == oid)
                .values(detail=text)
            )
