"""Repository for bulk export jobs and their NDJSON files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.database import cipher_of
from medmesh.store.schema import export_files, export_jobs

QUEUED, RUNNING, COMPLETE, FAILED, CANCELLED = (
    "queued",
    "running",
    "complete",
    "failed",
    "cancelled",
)


@dataclass(frozen=True, slots=True)
class ExportJob:
    """One `$export` request: who asked, for which patients and types, and where it stands."""

    id: str
    token_id: str
    request: str
    kind: str  # patient, group, system
    patient_ids: tuple[str, ...]
    types: tuple[str, ...]
    since: datetime | None
    status: str
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ExportFileInfo:
    name: str
    resource_type: str
    count: int


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A file's stored form: `data` as sealed (see fhir/export_jobs.py), with its key."""

    name: str
    resource_type: str
    count: int
    data: bytes
    wrapped_key: bytes
    master_key_id: str


def _job(row: RowMapping) -> ExportJob:
    return ExportJob(
        id=row["id"],
        token_id=row["token_id"],
        request=row["request"],
        kind=row["kind"],
        patient_ids=tuple(json.loads(row["patient_ids"])),
        types=tuple(json.loads(row["types"])),
        since=row["since"],
        status=row["status"],
        error=row["error"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        expires_at=row["expires_at"],
    )


class ExportJobs:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, job: ExportJob) -> None:
        await self._conn.execute(
            export_jobs.insert().values(
                id=job.id,
                token_id=job.token_id,
                request=job.request,
                kind=job.kind,
                patient_ids=json.dumps(list(job.patient_ids)),
                types=json.dumps(list(job.types)),
                since=job.since,
                status=job.status,
                error=job.error,
                created_at=job.created_at,
                completed_at=job.completed_at,
                expires_at=job.expires_at,
            )
        )

    async def get(self, job_id: str) -> ExportJob | None:
        query = select(export_jobs).where(export_jobs.c.id == job_id)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _job(row)

    async def status(self, job_id: str) -> str | None:
        query = select(export_jobs.c.status).where(export_jobs.c.id == job_id)
        return (await self._conn.execute(query)).scalar_one_or_none()

    async def with_status(self, status: str) -> list[str]:
        """Ids of the jobs in `status`, oldest first."""
        query = (
            select(export_jobs.c.id)
            .where(export_jobs.c.status == status)
            .order_by(export_jobs.c.created_at, export_jobs.c.id)
        )
        return list((await self._conn.execute(query)).scalars())

    async def _move(self, job_id: str, expected: Sequence[str], **values: object) -> bool:
        result = await self._conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.status.in_(list(expected)))
            .values(**values)
        )
        return bool(result.rowcount)

    async def claim(self, job_id: str) -> bool:
        """queued → running; False when another runner claimed it or it was cancelled."""
        return await self._move(job_id, [QUEUED], status=RUNNING)

    async def requeue(self, job_id: str) -> bool:
        """running → queued, its partial files deleted (a job a stopped process left)."""
        await self.delete_files(job_id)
        return await self._move(job_id, [RUNNING], status=QUEUED)

    async def complete(self, job_id: str, at: datetime, expires_at: datetime) -> bool:
        return await self._move(
            job_id, [RUNNING], status=COMPLETE, completed_at=at, expires_at=expires_at
        )

    async def fail(self, job_id: str, error: str, at: datetime) -> bool:
        """Marks the job failed and deletes the files it had written."""
        moved = await self._move(
            job_id, [QUEUED, RUNNING], status=FAILED, error=error[:500], completed_at=at
        )
        await self.delete_files(job_id)
        return moved

    async def cancel(self, job_id: str, at: datetime) -> bool:
        """Marks the job cancelled and deletes its files; False if it was already cancelled.

        The status changes first: that row lock orders it with a runner's `add_file_if_running`
        (PostgreSQL), so no file of a cancelled job survives the delete below.
        """
        moved = await self._move(
            job_id, [QUEUED, RUNNING, COMPLETE, FAILED], status=CANCELLED, completed_at=at
        )
        await self.delete_files(job_id)
        return moved

    async def add_file_if_running(self, job_id: str, file: ExportFile) -> bool:
        """Store a file of a running job; False (nothing stored) once it is not running.

        The no-op update locks the job's row and checks its status under that lock.
        """
        if not await self._move(job_id, [RUNNING], status=RUNNING):
            return False
        await self.add_file(job_id, file)
        return True

    async def add_file(self, job_id: str, file: ExportFile) -> None:
        await self._conn.execute(
            export_files.insert().values(
                job_id=job_id,
                name=file.name,
                resource_type=file.resource_type,
                count=file.count,
                data=file.data,
                wrapped_key=file.wrapped_key,
                master_key_id=file.master_key_id,
            )
        )

    async def files(self, job_id: str) -> list[ExportFileInfo]:
        """The job's files (without their data), by type and then in the order written."""
        query = select(
            export_files.c.name, export_files.c.resource_type, export_files.c.count
        ).where(export_files.c.job_id == job_id)
        found = [ExportFileInfo(*row) for row in (await self._conn.execute(query)).all()]
        return sorted(found, key=lambda f: (f.resource_type, _sequence(f.name), f.name))

    async def file(self, job_id: str, name: str) -> ExportFile | None:
        query = select(export_files).where(
            export_files.c.job_id == job_id, export_files.c.name == name
        )
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return ExportFile(
            row["name"],
            row["resource_type"],
            row["count"],
            bytes(row["data"]),
            bytes(row["wrapped_key"]),
            row["master_key_id"],
        )

    async def delete_files(self, job_id: str) -> None:
        await self._conn.execute(delete(export_files).where(export_files.c.job_id == job_id))

    async def expired(self, now: datetime) -> list[str]:
        """Jobs past their expiry time, whatever their status."""
        query = select(export_jobs.c.id).where(export_jobs.c.expires_at <= now)
        return list((await self._conn.execute(query)).scalars())

    async def delete(self, job_id: str) -> None:
        """The job and its files, gone, and the key of its files destroyed."""
        await self.delete_files(job_id)
        await self._conn.execute(delete(export_jobs).where(export_jobs.c.id == job_id))
        await cipher_of(self._conn).destroy(export_key_owner(job_id))


def export_key_owner(job_id: str) -> str:
    """Whose key an export job's files are sealed with, in the key store."""
    return f"export:{job_id}"


def _sequence(name: str) -> int:
    """`Observation-12.ndjson` → 12, so files list in the order written."""
    stem = name.removesuffix(".ndjson")
    number = stem.rpartition("-")[2]
    return int(number) if number.isdigit() else 0
