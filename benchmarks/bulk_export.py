"""Bulk export throughput and memory on SQLite and PostgreSQL.

For each backend the script stores N patients with one device each and M one-per-minute
heart-rate observations each (through the observations repository, which seals each value with
the patient's key, as ingest does), then measures:

- a `$export` job of every patient (Patient, Device, Flag, Observation), run by the export
  runner in this process: resources/second and the peak resident memory the job added
  (Linux VmHWM, reset before the job through /proc/self/clear_refs);
- `Patient/{id}/$everything` for one patient, paged with `_count=1000` through the real app
  in-process (httpx over ASGI): resources/second.

Run: `.venv/bin/python benchmarks/bulk_export.py` (`--help` for the counts, `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from _common import DEFAULT_POSTGRES_URL, print_machine, scratch_postgres
from medmesh import provisioning
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import Measure, measure_by_key
from medmesh.fhir.export_jobs import ExportRunner, ExportSettings, new_job
from medmesh.fhir.records import RECORD_TYPES
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.exports import ExportJobs
from medmesh.store.observations import Observations

START = datetime(2025, 1, 1, tzinfo=UTC)
SEED_BATCH = 5000


def _heart_rate() -> Measure:
    found = measure_by_key("heart-rate")
    assert found is not None
    return found


HEART_RATE = _heart_rate()


@dataclass(frozen=True, slots=True)
class Result:
    backend: str
    resources: int
    export_seconds: float
    peak_mib: float | None
    stored_mib: float
    everything_resources: int
    everything_seconds: float


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


async def seed(database: Database, patients: int, per_patient: int) -> tuple[list[str], str]:
    """Patients with a device and `per_patient` observations each; returns ids and a token."""
    ids = []
    for n in range(patients):
        patient = await provisioning.create_patient(
            database, family=f"Bench{n}", given="Pat", identifier=f"BENCH-{n}"
        )
        device = await provisioning.register_device(database, display_name=f"Cuff {n}")
        await provisioning.assign_device(database, device.device_id, patient.id, START)
        received = datetime.now(UTC)
        for first in range(0, per_patient, SEED_BATCH):
            readings = [
                Reading(
                    device_id=device.device_id,
                    message_id=f"m-{i}",
                    patient_id=patient.id,
                    measure=HEART_RATE,
                    effective=START + timedelta(minutes=i),
                    values=(MeasuredValue(HEART_RATE.code, float(60 + i % 40), "/min"),),
                )
                for i in range(first, min(per_patient, first + SEED_BATCH))
            ]
            async with database.write() as conn:
                await Observations(conn).add_batch(readings, received)
        ids.append(patient.id)
    token = await provisioning.issue_service_token(database, name="bench", scopes="system/*.rs")
    return ids, token


async def run_export(
    database: Database, patient_ids: list[str]
) -> tuple[int, float, float | None, float]:
    settings = ExportSettings()
    job = new_job(
        token_id="bench",
        request_url="http://bench/fhir/Patient/$export",
        kind="patient",
        patient_ids=patient_ids,
        types=RECORD_TYPES,
        since=None,
        expiry=settings.expiry,
    )
    # Rows received "now" by seed() must be inside the snapshot: kick off a moment later.
    await asyncio.sleep(0.01)
    async with database.write() as conn:
        await ExportJobs(conn).add(job)
        await ExportJobs(conn).claim(job.id)
    runner = ExportRunner(database, settings)
    before = _status_kib("VmRSS")
    peak_known = _reset_peak()
    started = time.perf_counter()
    await runner.run(job.id)
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    async with database.read() as conn:
        jobs = ExportJobs(conn)
        assert await jobs.status(job.id) == "complete", "the export job did not complete"
        files = await jobs.files(job.id)
        stored = 0
        for info in files:
            file = await jobs.file(job.id, info.name)
            stored += len(file.data) if file is not None else 0
    added = (peak - before) / 1024 if peak_known and peak and before else None
    return sum(f.count for f in files), seconds, added, stored / 2**20


async def run_everything(url: str, patient_id: str, token: str) -> tuple[int, float]:
    app = create_app(Settings(database_url=url, auto_migrate=False, export_runner=False))
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        started = time.perf_counter()
        url_next: str | None = f"/fhir/Patient/{patient_id}/$everything?_count=1000"
        count = 0
        while url_next is not None:
            response = await http.get(url_next, headers=headers)
            response.raise_for_status()
            bundle = response.json()
            count += len(bundle["entry"])
            url_next = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        return count, time.perf_counter() - started


async def bench(backend: str, url: str, opts: argparse.Namespace) -> Result:
    database = Database(url)
    try:
        await migrate.upgrade(database)
        print(f"[{backend}] storing {opts.patients} x {opts.observations} observations", flush=True)
        ids, token = await seed(database, opts.patients, opts.observations)
        resources, seconds, peak, stored = await run_export(database, ids)
        print(f"[{backend}] export: {resources} resources in {seconds:.1f} s", flush=True)
    finally:
        await database.dispose()
    count, everything_seconds = await run_everything(url, ids[0], token)
    return Result(backend, resources, seconds, peak, stored, count, everything_seconds)


async def main(opts: argparse.Namespace) -> None:
    await print_machine(postgres_url=opts.postgres_url if "postgresql" in opts.backends else None)
    results = []
    if "sqlite" in opts.backends:
        with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
            results.append(await bench("sqlite", f"sqlite:///{tmp}/bench.db", opts))
    if "postgresql" in opts.backends:
        async with scratch_postgres(opts.postgres_url) as url:
            results.append(await bench("postgresql", url, opts))
    print()
    print(
        f"{opts.patients} patients x {opts.observations} observations "
        f"({opts.patients * (opts.observations + 2)} resources)"
    )
    print("backend     | $export res/s | export s | peak RSS added | files MiB | $everything res/s")
    for r in results:
        peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.0f} MiB"
        print(
            f"{r.backend:<11} | {r.resources / r.export_seconds:>13,.0f} "
            f"| {r.export_seconds:>8.1f} | {peak:>14} | {r.stored_mib:>9.1f} "
            f"| {r.everything_resources / r.everything_seconds:>17,.0f}"
        )


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--observations", type=int, default=10_000, help="per patient")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--quick", action="store_true", help="3 patients x 300 observations")
    opts = parser.parse_args()
    if opts.quick:
        opts.patients, opts.observations = 3, 300
    return opts


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_options()))
    except KeyboardInterrupt:
        sys.exit("interrupted")
