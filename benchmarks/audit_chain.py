"""Audit log throughput on SQLite and PostgreSQL: appends/second and verification records/second.

For each backend, on a fresh database, in this process (no server: this is the cost the policy
layer pays per access, and the cost of `medmesh audit verify`):

- single: one `AuditLog.append` per write transaction, one appender after another;
- concurrent: the same with several asyncio tasks appending at once (each in its own write
  transaction), so they queue on the append lock (PostgreSQL advisory lock, SQLite writer lock);
- writer: concurrent requests recording through one `AuditWriter` (group commit: what queued
  while a transaction committed goes into the next one together);
- batched: `append_many` with a batch of entries per write transaction (fills the log for
  the verification phase too);
- verify: `verify_chain` over the whole log, which must be intact.

Run: `.venv/bin/python benchmarks/audit_chain.py` (`--quick` for a smoke run, `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from _common import PostgresUnreachable, load_average, log, print_machine, scratch_postgres
from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.audit.entries import AuditEntry, verify_chain
from medmesh.store import migrate
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database

DEFAULT_POSTGRES_URL = os.environ.get(
    "MEDMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    postgres_url: str
    single: int  # appends, one per transaction
    tasks: int  # concurrent appenders in the concurrent phase
    writer_tasks: int  # concurrent requests recording through one AuditWriter (group commit)
    writer_records: int
    batched: int  # records appended with append_many
    batch_size: int


@dataclass(frozen=True, slots=True)
class Figure:
    backend: str
    phase: str
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _entry(n: int) -> AuditEntry:
    """A typical read: a clinician, one Observation of one of 1,000 patients."""
    return AuditEntry(
        action="R",
        subtype="read",
        actor_kind="user",
        actor_id=f"user-{n % 50}",
        actor_name=f"Dr Bench {n % 50}",
        organization_id="default",
        resource_type="Observation",
        resource_id=str(uuid.UUID(int=n)),
        patient_id=str(uuid.UUID(int=n % 1000)),
        purpose="TREAT",
        basis="care-team",
        source="127.0.0.1",
    )


async def _timed(
    backend: str, phase: str, records: int, work: Callable[[], Awaitable[None]]
) -> Figure:
    started = time.perf_counter()
    await work()
    figure = Figure(backend, phase, records, time.perf_counter() - started)
    took = f"({records:,} in {figure.seconds:.2f} s)"
    log(f"[{backend}] {phase:<11} {figure.rate:>10,.0f} records/s {took}")
    return figure


async def bench(backend: str, url: str, opts: Options) -> list[Figure]:
    database = Database(url)
    await migrate.upgrade(database)
    counter = iter(range(10**12))

    async def append_one() -> None:
        async with database.write() as conn:
            await AuditLog(conn).append(_entry(next(counter)))

    async def single() -> None:
        for _ in range(opts.single):
            await append_one()

    async def concurrent() -> None:
        share = opts.single // opts.tasks

        async def appender() -> None:
            for _ in range(share):
                await append_one()

        await asyncio.gather(*(appender() for _ in range(opts.tasks)))

    async def group_commit() -> None:
        writer = AuditWriter(database)
        share = opts.writer_records // opts.writer_tasks

        async def requester() -> None:
            for _ in range(share):
                await writer.record(_entry(next(counter)))

        await asyncio.gather(*(requester() for _ in range(opts.writer_tasks)))
        await writer.aclose()

    async def batched() -> None:
        for _ in range(opts.batched // opts.batch_size):
            async with database.write() as conn:
                entries = [_entry(next(counter)) for _ in range(opts.batch_size)]
                await AuditLog(conn).append_many(entries)

    verified = 0

    async def verify() -> None:
        nonlocal verified
        report = await verify_chain(database)
        if not report.intact:
            raise RuntimeError(f"the benchmark's own chain is broken: {report}")
        verified = report.checked

    try:
        figures = [
            await _timed(backend, "single", opts.single, single),
            await _timed(
                backend,
                f"concurrent{opts.tasks}",
                opts.single // opts.tasks * opts.tasks,
                concurrent,
            ),
            await _timed(
                backend,
                f"writer{opts.writer_tasks}",
                opts.writer_records // opts.writer_tasks * opts.writer_tasks,
                group_commit,
            ),
            await _timed(
                backend,
                f"batch{opts.batch_size}",
                opts.batched // opts.batch_size * opts.batch_size,
                batched,
            ),
        ]
        total = sum(f.records for f in figures)
        figures.append(await _timed(backend, "verify", total, verify))
        if verified != total:
            raise RuntimeError(f"verified {verified} records, appended {total}")
        return figures
    finally:
        await database.dispose()


async def bench_postgresql(opts: Options) -> list[Figure]:
    async with scratch_postgres(opts.postgres_url) as url:
        return await bench("postgresql", url, opts)


async def main(opts: Options) -> None:
    await print_machine(postgres_url=opts.postgres_url if "postgresql" in opts.backends else None)
    log("sqlite:     WAL, synchronous=FULL")
    log(
        f"run:        {opts.single:,} single appends, the same over {opts.tasks} tasks and "
        f"{opts.writer_records:,} through AuditWriter from {opts.writer_tasks} tasks, "
        f"{opts.batched:,} in batches of {opts.batch_size}, then verify everything"
    )
    figures: list[Figure] = []
    if "sqlite" in opts.backends:
        with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
            figures += await bench("sqlite", f"sqlite:///{tmp}/bench.db", opts)
    if "postgresql" in opts.backends:
        try:
            figures += await bench_postgresql(opts)
        except PostgresUnreachable as exc:
            log(f"skipped: {exc}")
    log("")
    log(f"{'backend':<12}{'phase':<14}{'records/s':>12}{'records':>10}{'seconds':>9}")
    for f in figures:
        log(f"{f.backend:<12}{f.phase:<14}{f.rate:>12,.0f}{f.records:>10,}{f.seconds:>9.2f}")
    log(f"load at the end: {load_average()}")


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--single", type=int, default=5000, help="appends, one per transaction")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent appenders")
    parser.add_argument(
        "--writer-tasks", type=int, default=64, help="concurrent requests using AuditWriter"
    )
    parser.add_argument("--writer-records", type=int, default=20_000)
    parser.add_argument("--batched", type=int, default=200_000, help="records via append_many")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args(argv)
    counts = (args.single, args.tasks, args.writer_tasks, args.writer_records, args.batched)
    if min(*counts, args.batch_size) < 1:
        parser.error("counts must be at least 1")
    backends = tuple(args.backend or ("sqlite", "postgresql"))
    if args.quick:
        return Options(
            backends,
            args.postgres_url,
            100,
            args.tasks,
            args.writer_tasks,
            1000,
            5000,
            args.batch_size,
        )
    return Options(
        backends,
        args.postgres_url,
        args.single,
        args.tasks,
        args.writer_tasks,
        args.writer_records,
        args.batched,
        args.batch_size,
    )


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_options()))
    except KeyboardInterrupt:
        sys.exit("interrupted")
