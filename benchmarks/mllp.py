"""HL7 v2 / MLLP ingest throughput of medmesh, on SQLite and PostgreSQL.

For each backend the script provisions a patient and a registered bedside monitor, starts the
MLLP listener (`MllpServer`) in a child process (this script with --serve) on a free port of
127.0.0.1, and sends IHE PCD-01 ORU^R01 messages over real TCP connections: 6 OBX each (SpO2,
pulse rate, heart rate, NIBP systolic + diastolic, temperature), which become 5 readings. MLLP
is request/response, so every sender waits for its message's ACK (which must be AA) before the
next. Each phase is timed over 1 and over 4 concurrent connections, capped in time; the client
runs in this process and competes with the server for CPU, so the figures are end-to-end ones.

Run: `.venv/bin/python benchmarks/mllp.py` (or `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from _common import (
    PostgresUnreachable,
    free_port,
    log,
    percentile,
    print_machine,
    scratch_postgres,
)
from medmesh import provisioning
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store import migrate
from medmesh.store.database import Database

POSTGRES_URL = os.environ.get(
    "MEDMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SERIAL = "BENCH-MONITOR-1"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # phase p, sender k, message n: distinct past times
READINGS_PER_MESSAGE = 5
START, END = b"\x0b", b"\x1c\x0d"
STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    messages: int  # per phase, over all connections
    connections: tuple[int, ...]
    max_seconds: float  # cap on each phase
    warmup: int


@dataclass(frozen=True, slots=True)
class Figure:
    backend: str
    connections: int
    messages: int
    seconds: float
    latencies: list[float] = field(repr=False)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def oru(control_id: str, at: datetime) -> bytes:
    """One PCD-01 ORU^R01 message with 6 OBX (5 readings), framed for MLLP."""
    t = at.strftime("%Y%m%d%H%M%S+0000")
    mmhg = "266016^MDC_DIM_MMHG^MDC"
    segments = [
        f"MSH|^~\\&|{SERIAL}^0123456789ABCDEF^EUI-64|ICU|medmesh|HOSP|{t}||ORU^R01^ORU_R01|"
        f"{control_id}|P|2.6|||NE|AL",
        "PID|||BENCH-MRN-1^^^urn:medmesh:mrn^MR||Bench^Mark",
        f"OBR|1|{control_id}^{SERIAL}||182777000^monitoring of patient^SCT|||{t}",
        f"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||{t}",
        f"OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC"
        f"|||||R|||{t}",
        f"OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|73|264864^MDC_DIM_BEAT_PER_MIN^MDC"
        f"|||||R|||{t}",
        f"OBX|4|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.3.1.1|128|{mmhg}|||||R|||{t}",
        f"OBX|5|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.3.1.2|82|{mmhg}|||||R|||{t}",
        f"OBX|6|NM|150364^MDC_TEMP_BODY^MDC|1.4.1.1|36.9|268192^MDC_DIM_DEGC^MDC|||||R|||{t}",
    ]
    return START + "\r".join(segments).encode() + END


# --- the server (child process) ---------------------------------------------------------------


async def serve(url: str, port: int) -> None:
    """Run the MLLP listener until stdin closes (the parent ends it that way)."""
    database = Database(url)
    server = MllpServer(database, IngestPipeline(database))
    await server.start("127.0.0.1", port)
    log("ready")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop()
    await database.dispose()


# --- the client -------------------------------------------------------------------------------


async def provision(url: str) -> None:
    database = Database(url)
    try:
        await migrate.upgrade(database)
        await provisioning.create_patient(
            database, family="Bench", given="Mark", identifier="BENCH-MRN-1"
        )
        await provisioning.register_device(
            database, display_name="Bench monitor", serial_number=SERIAL, shared_monitor=True
        )
    finally:
        await database.dispose()


async def send_loop(
    port: int, prefix: str, start: datetime, count: int, deadline: float
) -> list[float]:
    """Up to `count` messages on one connection, each waiting for its AA; stops at `deadline`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    try:
        for n in range(count):
            if time.monotonic() >= deadline:
                break
            began = time.perf_counter()
            writer.write(oru(f"{prefix}-{n}", start + timedelta(seconds=n)))
            await writer.drain()
            ack = await reader.readuntil(END)
            latencies.append(time.perf_counter() - began)
            if b"MSA|AA|" not in ack:
                raise RuntimeError(f"expected AA, got {ack[:200]!r}")
    finally:
        writer.close()
    return latencies


async def measure(backend: str, port: int, phase: int, connections: int, opts: Options) -> Figure:
    per_connection = max(1, opts.messages // connections)
    origin = EPOCH + timedelta(days=30 * phase)
    await asyncio.gather(
        *(
            send_loop(port, f"w{phase}-{k}", origin - timedelta(days=1 + k), opts.warmup, 1e18)
            for k in range(connections)
        )
    )
    deadline = time.monotonic() + opts.max_seconds
    began = time.perf_counter()
    results = await asyncio.gather(
        *(
            send_loop(port, f"p{phase}-{k}", origin + timedelta(days=k), per_connection, deadline)
            for k in range(connections)
        )
    )
    seconds = time.perf_counter() - began
    latencies = [x for r in results for x in r]
    return Figure(backend, connections, len(latencies), seconds, latencies)


async def bench_backend(backend: str, url: str, opts: Options, figures: list[Figure]) -> None:
    log(f"[{backend}] provisioning a patient and a monitor")
    await provision(url)
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        url,
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), STARTUP_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(f"the MLLP server did not start: {line!r}")
        log(f"[{backend}] MLLP server (pid {child.pid}) on 127.0.0.1:{port}")
        for phase, connections in enumerate(opts.connections):
            figure = await measure(backend, port, phase, connections, opts)
            figures.append(figure)
            log(
                f"[{backend}] {connections} connection(s): {figure.messages_per_second:,.0f} "
                f"messages/s ({figure.messages} in {figure.seconds:.1f} s)"
            )
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()


def _admin_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)


async def bench_postgresql(opts: Options, figures: list[Figure], skipped: list[str]) -> None:
    """A fresh database, dropped at the end; skipped (with the reason) if unreachable."""
    try:
        async with scratch_postgres(POSTGRES_URL) as url:
            await bench_backend("postgresql", url, opts, figures)
    except PostgresUnreachable as exc:
        skipped.append(str(exc))
        log(f"skipped: {exc}")


def print_table(figures: list[Figure], skipped: list[str]) -> None:
    log("")
    log(
        f"{'backend':<12}{'conns':>6}{'messages/s':>12}{'readings/s':>12}{'p50 ms':>9}"
        f"{'p95 ms':>9}  (messages, s)"
    )
    for f in figures:
        log(
            f"{f.backend:<12}{f.connections:>6}{f.messages_per_second:>12,.0f}"
            f"{f.messages_per_second * READINGS_PER_MESSAGE:>12,.0f}"
            f"{percentile(f.latencies, 50) * 1000:>9.1f}{percentile(f.latencies, 95) * 1000:>9.1f}"
            f"  ({f.messages}, {f.seconds:.1f})"
        )
    for reason in skipped:
        log(f"skipped: {reason}")


async def main(opts: Options) -> list[Figure]:
    await print_machine(postgres_url=POSTGRES_URL if "postgresql" in opts.backends else None)
    log("server: child process, client: this process")
    log(
        f"run: {opts.messages} ORU^R01 messages (6 OBX, {READINGS_PER_MESSAGE} readings each) per "
        f"phase over {', '.join(map(str, opts.connections))} connection(s), "
        f"cap {opts.max_seconds:g} s per phase"
    )
    figures: list[Figure] = []
    skipped: list[str] = []
    if "sqlite" in opts.backends:
        with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
            await bench_backend("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", opts, figures)
    if "postgresql" in opts.backends:
        await bench_postgresql(opts, figures, skipped)
    print_table(figures, skipped)
    return figures


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--messages", type=int, default=2000, help="per phase (default 2000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap on each phase")
    parser.add_argument("--quick", action="store_true", help="60 messages a phase, 3 s cap")
    args = parser.parse_args(argv)
    if args.messages < 4:
        parser.error("--messages must be at least 4")
    backends = tuple(args.backend or ("sqlite", "postgresql"))
    if args.quick:
        return Options(backends, 60, (1, 4), 3.0, 2)
    return Options(backends, args.messages, (1, 4), args.max_seconds, 10)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(main(parse_options()))
