"""Repository for imaging studies, series, instances and the quarantine. Files and descriptive
header fields are sealed with the patient's key (quarantined files with their own key), bound to
their column and row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import DataKey
from medmesh.domain.imaging import (
    Instance,
    InstanceHeader,
    QuarantinedInstance,
    QuarantineStatus,
    Series,
    Study,
)
from medmesh.store.database import cipher_of
from medmesh.store.schema import (
    imaging_instances,
    imaging_quarantine,
    imaging_series,
    imaging_studies,
)

_STUDY = "imaging_studies.detail"
_SERIES = "imaging_series.detail"
_CONTENT = "imaging_instances.content"
_QUARANTINED = "imaging_quarantine.content"


class StudyOfAnotherPatient(Exception):
    """The instance's study or series is already filed under another patient."""


def quarantine_key_owner(item_id: str) -> str:
    """Whose key a quarantined file is sealed with, in the key store."""
    return f"quarantine:{item_id}"


@dataclass(frozen=True, slots=True)
class StartedBetween:
    """Bounds on a study's start (FHIR `started` search): `op` is ge or lt."""

    op: str
    at: datetime

    def condition(self) -> ColumnElement[bool]:
        column = imaging_studies.c.started_at
        return column >= self.at if self.op == "ge" else column < self.at


def _seal_json(key: DataKey, value: dict[str, Any], column: str, row: str) -> bytes:
    return key.seal_text(json.dumps(value, separators=(",", ":")), column, row)


def _open_json(key: DataKey, sealed: bytes, column: str, row: str) -> dict[str, Any]:
    opened: dict[str, Any] = json.loads(key.open_text(sealed, column, row))
    return opened


def _series(row: RowMapping, key: DataKey, instances: int) -> Series:
    detail = _open_json(key, row["detail"], _SERIES, row["id"])
    return Series(
        id=row["id"],
        study_id=row["study_id"],
        uid=row["series_uid"],
        modality=row["modality"],
        number=row["number"],
        description=detail.get("description", ""),
        body_part=detail.get("body_part", ""),
        instances=instances,
    )


def _instance(row: RowMapping) -> Instance:
    return Instance(
        id=row["id"],
        series_id=row["series_id"],
        patient_id=row["patient_id"],
        sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        number=row["number"],
        transfer_syntax=row["transfer_syntax"],
        size=row["size"],
        slice_position=row["slice_position"],
        frames=row["frames"],
    )


def _quarantined(row: RowMapping) -> QuarantinedInstance:
    return QuarantinedInstance(
        id=row["id"],
        status=QuarantineStatus(row["status"]),
        reason=row["reason"],
        source=row["source"],
        received_at=row["received_at"],
        study_uid=row["study_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        modality=row["modality"],
    )


class ImagingRecords:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # --- writing ------------------------------------------------------------------------

    async def has_instance(self, sop_instance_uid: str) -> bool:
        query = select(imaging_instances.c.id).where(
            imaging_instances.c.sop_instance_uid == sop_instance_uid
        )
        return (await self._conn.execute(query)).first() is not None

    async def add_instance(
        self, patient_id: str, header: InstanceHeader, content: bytes, at: datetime
    ) -> bool:
        """File one instance under the patient; False when it was already stored (the same SOP
        Instance UID is kept once). Raises StudyOfAnotherPatient when its study or series is
        filed under someone else."""
        if await self.has_instance(header.sop_instance_uid):
            return False
        key = await cipher_of(self._conn).key_or_create(patient_id)
        study_id = await self._study(patient_id, header, key, at)
        series_id = await self._series(patient_id, study_id, header, key)
        instance_id = str(uuid.uuid4())
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    imaging_instances.insert().values(
                        id=instance_id,
                        series_id=series_id,
                        patient_id=patient_id,
                        sop_instance_uid=header.sop_instance_uid,
                        sop_class_uid=header.sop_class_uid,
                        number=header.instance_number,
                        slice_position=header.slice_position,
                        frames=header.frames,
                        transfer_syntax=header.transfer_syntax,
                        size=len(content),
                        received_at=at,
                        content=key.seal(content, _CONTENT, instance_id),
                    )
                )
        except IntegrityError:  # the same instance stored by a concurrent association
            return False
        return True

    async def _study(
        self, patient_id: str, header: InstanceHeader, key: DataKey, at: datetime
    ) -> str:
        query = select(
            imaging_studies.c.id, imaging_studies.c.patient_id, imaging_studies.c.modalities
        ).where(imaging_studies.c.study_uid == header.study_uid)
        row = (await self._conn.execute(query)).first()
        if row is None:
            study_id = str(uuid.uuid4())
            detail = {
                "description": header.study_description,
                "accession": header.accession_number,
                "patient_name": header.patient_name,
                "birth_date": header.patient_birth_date,
            }
            try:
                async with self._conn.begin_nested():
                    await self._conn.execute(
                        imaging_studies.insert().values(
                            id=study_id,
                            patient_id=patient_id,
                            study_uid=header.study_uid,
                            started_at=header.study_started,
                            modalities=header.modality,
                            detail=_seal_json(key, detail, _STUDY, study_id),
                            received_at=at,
                        )
                    )
                return study_id
            except IntegrityError:  # filed by a concurrent association: read it again
                row = (await self._conn.execute(query)).one()
        if row.patient_id != patient_id:
            raise StudyOfAnotherPatient("the study is filed under another patient")
        modalities = row.modalities.split()
        if header.modality not in modalities:
            await self._conn.execute(
                update(imaging_studies)
                .where(imaging_studies.c.id == row.id)
                .values(modalities=" ".join([*modalities, header.modality]))
            )
        return str(row.id)

    async def _series(
        self, patient_id: str, study_id: str, header: InstanceHeader, key: DataKey
    ) -> str:
        query = select(imaging_series.c.id, imaging_series.c.study_id).where(
            imaging_series.c.series_uid == header.series_uid
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            series_id = str(uuid.uuid4())
            detail = {"description": header.series_description, "body_part": header.body_part}
            try:
                async with self._conn.begin_nested():
                    await self._conn.execute(
                        imaging_series.insert().values(
                            id=series_id,
                            study_id=study_id,
                            patient_id=patient_id,
                            series_uid=header.series_uid,
                            modality=header.modality,
                            number=header.series_number,
                            detail=_seal_json(key, detail, _SERIES, series_id),
                        )
                    )
                return series_id
            except IntegrityError:
                row = (await self._conn.execute(query)).one()
        if row.study_id != study_id:
            raise StudyOfAnotherPatient("the series is filed under another study")
        return str(row.id)

    # --- reading ------------------------------------------------------------------------

    async def _studies(self, rows: Sequence[RowMapping]) -> list[Study]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        counts = (
            select(imaging_instances.c.series_id, func.count().label("n"))
            .group_by(imaging_instances.c.series_id)
            .subquery()
        )
        series_rows = (
            (
                await self._conn.execute(
                    select(imaging_series, func.coalesce(counts.c.n, 0).label("instances"))
                    .outerjoin(counts, counts.c.series_id == imaging_series.c.id)
                    .where(imaging_series.c.study_id.in_(ids))
                    .order_by(imaging_series.c.number, imaging_series.c.id)
                )
            )
            .mappings()
            .all()
        )
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        by_study: dict[str, list[Series]] = {}
        for row in series_rows:
            series = _series(row, keys[row["patient_id"]], int(row["instances"]))
            by_study.setdefault(series.study_id, []).append(series)
        studies = []
        for row in rows:
            key = keys[row["patient_id"]]
            detail = _open_json(key, row["detail"], _STUDY, row["id"])
            studies.append(
                Study(
                    id=row["id"],
                    patient_id=row["patient_id"],
                    uid=row["study_uid"],
                    started=row["started_at"],
                    modalities=tuple(row["modalities"].split()),
                    description=detail.get("description", ""),
                    accession_number=detail.get("accession", ""),
                    received_at=row["received_at"],
                    series=tuple(by_study.get(row["id"], ())),
                )
            )
        return studies

    async def study(self, study_id: str) -> Study | None:
        rows = (
            (
                await self._conn.execute(
                    select(imaging_studies).where(imaging_studies.c.id == study_id)
                )
            )
            .mappings()
            .all()
        )
        found = await self._studies(rows)
        return found[0] if found else None

    async def study_by_uid(self, study_uid: str) -> Study | None:
        query = select(imaging_studies).where(imaging_studies.c.study_uid == study_uid)
        found = await self._studies((await self._conn.execute(query)).mappings().all())
        return found[0] if found else None

    async def instance(self, instance_id: str) -> Instance | None:
        query = select(*[c for c in imaging_instances.c if c.name != "content"]).where(
            imaging_instances.c.id == instance_id
        )
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _instance(row)

    async def instance_by_uid(self, sop_instance_uid: str) -> Instance | None:
        query = select(*[c for c in imaging_instances.c if c.name != "content"]).where(
            imaging_instances.c.sop_instance_uid == sop_instance_uid
        )
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _instance(row)

    async def search(
        self,
        *,
        within: Sequence[str],
        started: Sequence[StartedBetween] = (),
        modality: str | None = None,
        limit: int,
        offset: int = 0,
    ) -> list[Study]:
        """Studies of these patients, newest first."""
        if not within:
            return []
        query = select(imaging_studies).where(imaging_studies.c.patient_id.in_(list(within)))
        for bound in started:
            query = query.where(bound.condition())
        if modality:
            query = query.where(
                imaging_studies.c.id.in_(
                    select(imaging_series.c.study_id).where(imaging_series.c.modality == modality)
                )
            )
        query = (
            query.order_by(imaging_studies.c.started_at.desc(), imaging_studies.c.id)
            .limit(limit)
            .offset(offset)
        )
        rows = (await self._conn.execute(query)).mappings().all()
        return await self._studies(rows)

    async def series(self, series_id: str) -> Series | None:
        rows = (
            (
                await self._conn.execute(
                    select(imaging_series).where(imaging_series.c.id == series_id)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return None
        key = await cipher_of(self._conn).key(rows[0]["patient_id"])
        count = (
            await self._conn.execute(
                select(func.count()).where(imaging_instances.c.series_id == series_id)
            )
        ).scalar_one()
        return _series(rows[0], key, int(count))

    async def instances(self, series_id: str) -> list[Instance]:
        """The series' instances in slice order (position, then instance number)."""
        query = (
            select(*[c for c in imaging_instances.c if c.name != "content"])
            .where(imaging_instances.c.series_id == series_id)
            .order_by(
                imaging_instances.c.slice_position,
                imaging_instances.c.number,
                imaging_instances.c.id,
            )
        )
        return [_instance(r) for r in (await self._conn.execute(query)).mappings().all()]

    async def content(self, instance: Instance) -> bytes:
        """The instance's Part 10 file, opened with the patient's key."""
        sealed = (
            await self._conn.execute(
                select(imaging_instances.c.content).where(imaging_instances.c.id == instance.id)
            )
        ).scalar_one()
        key = await cipher_of(self._conn).key(instance.patient_id)
        return key.open(sealed, _CONTENT, instance.id)

    # --- quarantine ---------------------------------------------------------------------

    async def quarantine(
        self,
        header: InstanceHeader,
        content: bytes,
        *,
        reason: str,
        source: str,
        at: datetime,
    ) -> QuarantinedInstance | None:
        """Keep an instance no single patient matched; None when it is already waiting."""
        exists = select(imaging_quarantine.c.id).where(
            imaging_quarantine.c.sop_instance_uid == header.sop_instance_uid
        )
        if (await self._conn.execute(exists)).first() is not None:
            return None
        item_id = str(uuid.uuid4())
        key = await cipher_of(self._conn).key_or_create(quarantine_key_owner(item_id))
        values = {
            "id": item_id,
            "status": QuarantineStatus.WAITING.value,
            "reason": reason[:200],
            "source": source[:80],
            "received_at": at,
            "study_uid": header.study_uid,
            "sop_instance_uid": header.sop_instance_uid,
            "modality": header.modality,
        }
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    imaging_quarantine.insert().values(
                        **values, content=key.seal(content, _QUARANTINED, item_id)
                    )
                )
        except IntegrityError:
            return None
        return _quarantined(values)  # type: ignore[arg-type]

    async def quarantined(
        self, status: QuarantineStatus | None = QuarantineStatus.WAITING, limit: int = 200
    ) -> list[QuarantinedInstance]:
        query = select(imaging_quarantine).order_by(imaging_quarantine.c.received_at).limit(limit)
        if status is not None:
            query = query.where(imaging_quarantine.c.status == status.value)
        return [_quarantined(r) for r in (await self._conn.execute(query)).mappings().all()]

    async def quarantined_item(self, item_id: str) -> QuarantinedInstance | None:
        query = select(imaging_quarantine).where(imaging_quarantine.c.id == item_id)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _quarantined(row)

    async def quarantined_content(self, item_id: str) -> bytes:
        sealed = (
            await self._conn.execute(
                select(imaging_quarantine.c.content).where(imaging_quarantine.c.id == item_id)
            )
        ).scalar_one()
        key = await cipher_of(self._conn).key(quarantine_key_owner(item_id))
        return key.open(sealed, _QUARANTINED, item_id)

    async def decide(
        self, item_id: str, status: QuarantineStatus, *, by: str, at: datetime
    ) -> None:
        """Close a quarantined item: its file row is emptied and its key destroyed."""
        await self._conn.execute(
            update(imaging_quarantine)
            .where(imaging_quarantine.c.id == item_id)
            .values(status=status.value, content=None, decided_by=by, decided_at=at)
        )
        await cipher_of(self._conn).destroy(quarantine_key_owner(item_id))
