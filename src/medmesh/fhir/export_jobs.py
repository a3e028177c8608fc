"""Bulk export jobs, run in the background of the server process.

A job's patients and types are fixed at kick-off. The runner claims queued jobs one at a time
(an atomic queued → running update, so two runners never take the same job), writes one
NDJSON file per resource type and per `file_resources` resources, and marks the job complete.
A job a stopped process left running is started again from the beginning when a runner
starts. A periodic sweep deletes jobs, and their files, past their expiry time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from medmesh.fhir import resources
from medmesh.fhir.records import (
    RECORD_TYPES,
    RecordFilter,
    appointment_resources,
    communication_resources,
    device_resources,
    flag_resources,
    imaging_study_resources,
    medication_resources,
    observation_page,
    patient_resource,
    visit_resources,
)
from medmesh.http.responses import operation_outcome
from medmesh.store.database import Database
from medmesh.store.exports import (
    QUEUED,
    RUNNING,
    ExportFile,
    ExportJob,
    ExportJobs,
    export_key_owner,
)
from medmesh.workers import wait_for_wake

log = logging.getLogger(__name__)

CHUNK = 1000  # rows read from the database at a time


def _now() -> datetime:
    return datetime.now(UTC)


# --- the one place export files are sealed and opened -------------------------------------
# Export files hold whole records, so they are encrypted (AES-256-GCM) under a data key of the
# job's own, kept like patients' keys in the key store outside the main database; the key is
# destroyed with the job (expiry sweep, erasure of a patient it includes), so a backup of the
# main database taken while the export existed cannot open its files afterwards.
_COLUMN = "export_files.data"


async def _seal(
    database: Database, job_id: str, name: str, data: bytes
) -> tuple[bytes, bytes, str]:
    """An export file's bytes as stored: (ciphertext, b"" (the key is in the key store), its
    key id)."""
    key = await database.cipher.key_or_create(export_key_owner(job_id))
    return key.seal(data, _COLUMN, name), b"", key.key_id


async def open_file(database: Database, job_id: str, file: ExportFile) -> bytes:
    """The NDJSON bytes of a stored export file."""
    key = await database.cipher.key(export_key_owner(job_id))
    return key.open(file.data, _COLUMN, file.name)


# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSettings:
    expiry: timedelta = timedelta(hours=24)
    file_resources: int = 10_000  # resources per NDJSON file at most
    sweep_interval: float = 600.0  # seconds between expiry sweeps
    poll_interval: float = 5.0  # seconds between looks for jobs queued by other processes


class JobCancelled(Exception):
    """The job stopped being `running` (cancelled by its owner) while it ran."""


class _Files:
    """Buffers one resource type's NDJSON lines and stores a file each `limit` lines."""

    def __init__(self, database: Database, job_id: str, limit: int) -> None:
        self._database = database
        self._job_id = job_id
        self._limit = limit
        self._lines: list[bytes] = []
        self._numbers: dict[str, int] = {}

    async def add(self, resource_type: str, resource: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(resource) + b"\n")
        if len(self._lines) >= self._limit:
            await self.flush(resource_type)

    async def flush(self, resource_type: str) -> None:
        if not self._lines:
            return
        number = self._numbers.get(resource_type, 0) + 1
        self._numbers[resource_type] = number
        name = f"{resource_type}-{number}.ndjson"
        data, wrapped_key, key_id = await _seal(
            self._database, self._job_id, name, b"".join(self._lines)
        )
        file = ExportFile(
            name,
            resource_type,
            len(self._lines),
            data,
            wrapped_key,
            key_id,
        )
        self._lines = []
        async with self._database.write() as conn:
            if not await ExportJobs(conn).add_file_if_running(self._job_id, file):
                raise JobCancelled


async def _records(
    database: Database, job: ExportJob, kind: str, wanted: RecordFilter, seen: set[str]
) -> AsyncIterator[dict[str, Any]]:
    """Every `kind` resource of the job's patients, read CHUNK rows at a time."""
    visible = set(job.patient_ids)
    for patient_id in job.patient_ids:
        if kind == "Patient":
            async with database.read() as conn:
                found = await patient_resource(conn, patient_id)
            if found is not None:
                yield found
            continue
        if kind == "Observation":
            key: tuple[datetime, str] | None = None
            while True:
                async with database.read() as conn:
                    page = await observation_page(conn, patient_id, wanted, key, CHUNK)
                for stored in page:
                    yield resources.observation(stored)
                if len(page) < CHUNK:
                    break
                key = (page[-1].effective, page[-1].id)
            continue
        offset = 0
        while True:
            async with database.read() as conn:
                if kind == "Device":
                    chunk = await device_resources(conn, patient_id, CHUNK, offset, visible)
                elif kind == "Communication":
                    chunk = await communication_resources(conn, patient_id, wanted, CHUNK, offset)
                elif kind == "ImagingStudy":
                    chunk = await imaging_study_resources(conn, patient_id, wanted, CHUNK, offset)
                elif kind == "MedicationRequest":
                    chunk = await medication_resources(conn, patient_id, wanted, CHUNK, offset)
                elif kind == "Appointment":
                    chunk = await appointment_resources(conn, patient_id, wanted, CHUNK, offset)
                elif kind in ("Encounter", "ChargeItem"):
                    chunk = await visit_resources(kind, conn, patient_id, wanted, CHUNK, offset)
                else:
                    chunk = await flag_resources(conn, patient_id, wanted, CHUNK, offset)
            for resource in chunk:
                if kind == "Device":
                    # A device several of the job's patients used is written once.
                    if resource["id"] in seen:
                        continue
                    seen.add(resource["id"])
                yield resource
            if len(chunk) < CHUNK:
                break
            offset += CHUNK


async def missing_patients(database: Database, patient_ids: tuple[str, ...]) -> list[str]:
    missing = []
    for patient_id in patient_ids:
        async with database.read() as conn:
            if await patient_resource(conn, patient_id) is None:
                missing.append(patient_id)
    return missing


class ExportRunner:
    """Runs queued export jobs, one at a time, and sweeps expired ones."""

    def __init__(
        self,
        database: Database,
        settings: ExportSettings,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self.settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._progress: dict[str, str] = {}

    def progress(self, job_id: str) -> str | None:
        """What the job is doing now, if this process runs it (for X-Progress)."""
        return self._progress.get(job_id)

    async def start(self) -> None:
        """Start again the jobs a stopped process left running, then run the queue."""
        async with self._database.write() as conn:
            jobs = ExportJobs(conn)
            for job_id in await jobs.with_status(RUNNING):
                await jobs.requeue(job_id)
                log.warning("export job %s was left running; started again", job_id)
        self._task = asyncio.create_task(self._run(), name="medmesh-export-jobs")

    def wake(self) -> None:
        """A job was queued: look at the queue now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        next_sweep = time.monotonic()
        while True:
            self._wake.clear()
            try:
                await self.run_queued()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.sweep_interval
                    await self.sweep(self._clock())
            except Exception as exc:  # the database may be back next round
                log.error("export runner round failed (%s)", type(exc).__name__)
            wait = min(self.settings.poll_interval, max(0.0, next_sweep - time.monotonic()))
            await wait_for_wake(self._wake, wait)

    async def run_queued(self) -> None:
        """Run every queued job this runner can claim, oldest first."""
        async with self._database.read() as conn:
            queued = await ExportJobs(conn).with_status(QUEUED)
        for job_id in queued:
            async with self._database.write() as conn:
                claimed = await ExportJobs(conn).claim(job_id)
            if claimed:
                await self.run(job_id)

    async def run(self, job_id: str) -> None:
        """Write a claimed job's files and complete it; a failure fails the job, not the runner."""
        try:
            await self._write(job_id)
        except JobCancelled:
            log.info("export job %s cancelled while running", job_id)
        except Exception as exc:
            log.error("export job %s failed (%s)", job_id, type(exc).__name__)
            async with self._database.write() as conn:
                await ExportJobs(conn).fail(
                    job_id, f"the export failed ({type(exc).__name__}); start a new export", _now()
                )
        finally:
            self._progress.pop(job_id, None)

    async def _write(self, job_id: str) -> None:
        async with self._database.read() as conn:
            job = await ExportJobs(conn).get(job_id)
        if job is None:
            return
        # Observations received after the kick-off are left out: the files are the record as
        # of transactionTime (the kick-off time).
        wanted = RecordFilter(types=job.types, since=job.since, until=job.created_at)
        files = _Files(self._database, job.id, self.settings.file_resources)
        missing = await missing_patients(self._database, job.patient_ids)
        for kind in [t for t in RECORD_TYPES if t in job.types]:
            seen: set[str] = set()
            done = 0
            self._progress[job.id] = f"writing {kind} ({len(job.types)} type(s))"
            async for resource in _records(self._database, job, kind, wanted, seen):
                await files.add(kind, resource)
                done += 1
                if done % CHUNK == 0:
                    self._progress[job.id] = f"writing {kind}: {done} resources"
            await files.flush(kind)
        if missing:
            # A patient erased between kick-off and run: said in the manifest's error file.
            for patient_id in missing:
                await files.add(
                    "OperationOutcome",
                    operation_outcome(
                        "not-found", f"Patient/{patient_id} no longer exists; nothing exported"
                    ),
                )
            await files.flush("OperationOutcome")
        now = self._clock()
        async with self._database.write() as conn:
            if not await ExportJobs(conn).complete(job.id, now, now + self.settings.expiry):
                raise JobCancelled

    async def sweep(self, now: datetime) -> int:
        """Delete the jobs, and their files, past their expiry time; returns how many."""
        async with self._database.write() as conn:
            jobs = ExportJobs(conn)
            expired = await jobs.expired(now)
            for job_id in expired:
                await jobs.delete(job_id)
        if expired:
            log.info("deleted %d expired export job(s)", len(expired))
        return len(expired)


def new_job(
    *,
    token_id: str,
    request_url: str,
    kind: str,
    patient_ids: list[str],
    types: tuple[str, ...],
    since: datetime | None,
    expiry: timedelta,
) -> ExportJob:
    now = _now()
    return ExportJob(
        id=str(uuid.uuid4()),
        token_id=token_id,
        request=request_url[:2000],
        kind=kind,
        patient_ids=tuple(patient_ids),
        types=types,
        since=since,
        status=QUEUED,
        error=None,
        created_at=now,
        completed_at=None,
        expires_at=now + expiry,
    )
