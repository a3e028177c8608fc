"""Ingest throughput and search latency of a real medmesh server, on SQLite and PostgreSQL.

For each backend the script provisions patients, devices and a clinician token in-process,
starts `python -m medmesh serve` as a child process on 127.0.0.1 and then measures, over HTTP:

- readings/second through `POST /ingest/v1/readings`, batches of 1 and of 100 readings, with a
  fixed number of concurrent senders (one device each);
- latency of `GET /fhir/Observation` for one patient's day of one-per-minute heart rate
  (1440 Observations; the server pages at most 1000, so a search follows the `next` link and
  one search is two requests), searches sent one after another.

The client runs in this process, so on a small machine it competes with the server for CPU;
the figures are end-to-end ones, printed with the CPU used by the server and by the client.

Run: `.venv/bin/python benchmarks/ingest_and_search.py` (`--help` for the counts, `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from _common import (
    add_backend_options,
    free_port,
    load_average,
    log,
    on_each_backend,
    percentile,
    print_machine,
    process_cpu,
    tail,
    venv_python,
)
from medmesh import provisioning
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import observations

HEART_RATE_LOINC = "http://loinc.org|8867-4"
ASSIGNED_FROM = datetime(2020, 1, 1, tzinfo=UTC)
THROUGHPUT_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # sender k starts k days later, 1 s apart
SEARCH_DAY = datetime(2026, 1, 15, tzinfo=UTC)
MINUTES_PER_DAY = 1440
LOAD_BATCH = 100
STARTUP_TIMEOUT = 180.0  # seconds; a machine shared with test suites starts servers slowly


@dataclass(frozen=True, slots=True)
class Options:
    """What to run and how much of it."""

    backends: tuple[str, ...]
    postgres_url: str  # maintenance database; the run creates and drops its own
    senders: int
    single_requests: int  # per sender, batches of 1
    hundred_requests: int  # per sender, batches of 100
    max_seconds: float  # cap on each ingest phase
    searches: int
    warmup: int


@dataclass(slots=True)
class Sender:
    """One device sending its own numbered, one-second-apart readings."""

    device_id: str
    secret: str
    start: datetime
    sent: int = 0

    def next_batch(self, size: int) -> dict[str, Any]:
        """The next `size` readings as a native JSON body."""
        readings = [self._reading(self.sent + i) for i in range(size)]
        self.sent += size
        return {"readings": readings}

    def _reading(self, n: int) -> dict[str, Any]:
        moment = self.start + timedelta(seconds=n)
        return {
            "id": f"bench-{n}",
            "type": "heart-rate",
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "value": 60 + n % 40,
            "unit": "/min",
        }


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What the benchmark needs from the registry: senders, a searched patient, a token."""

    senders: list[Sender]
    search_sender: Sender
    search_patient_id: str
    token: str


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds used during a phase by the server process and by this (client) process."""

    server: float | None  # None where /proc is not available
    client: float

    def shares(self, seconds: float) -> str:
        """Server/client CPU as percentages of one core, e.g. `95%/80%`."""
        server = "n/a" if self.server is None else f"{self.server / seconds * 100:.0f}%"
        return f"{server}/{self.client / seconds * 100:.0f}%"


@dataclass(frozen=True, slots=True)
class IngestFigure:
    """Throughput of one backend at one batch size."""

    backend: str
    batch: int
    readings: int
    requests: int
    seconds: float
    cpu: Cpu
    latencies: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        """Readings per second of wall time."""
        return self.readings / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SearchFigure:
    """Latency of the 24-hour search on one backend."""

    backend: str
    entries: int
    pages: int  # requests per search
    seconds: float
    cpu: Cpu
    latencies: list[float] = field(repr=False)
    # The same-run limit: a bare SELECT of the same rows (no decryption, no FHIR, no HTTP).
    limit: list[float] = field(default_factory=list, repr=False)
    # Each search's time inside the server's app (its request log, all pages summed): the rest
    # of `latencies` is HTTP, the client and waiting for a CPU.
    in_server: list[float] = field(default_factory=list, repr=False)


@dataclass(slots=True)
class Report:
    """Every figure of a run, and the backends skipped with the reason."""

    ingest: list[IngestFigure] = field(default_factory=list)
    search: list[SearchFigure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Server:
    """A running `medmesh serve` child process."""

    base_url: str
    pid: int
    startup_seconds: float
    log_path: Path

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server so far (Linux /proc; None elsewhere)."""
        return process_cpu(self.pid)


# --- helpers ----------------------------------------------------------------------------------


def cpu_mark(server: Server) -> Cpu:
    """CPU seconds used so far by the server and by this process."""
    return Cpu(server.cpu_seconds(), time.process_time())


def cpu_since(server: Server, mark: Cpu) -> Cpu:
    """CPU seconds used by the server and by this process since `mark`."""
    now = cpu_mark(server)
    used = None if now.server is None or mark.server is None else now.server - mark.server
    return Cpu(used, now.client - mark.client)


def server_env(url: str) -> dict[str, str]:
    """This environment without other MEDMESH_* settings (no MQTT broker, etc.), plus the URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDMESH_")}
    env["MEDMESH_DATABASE_URL"] = url
    # Each sender posts as fast as the server answers, far past a device's rate limit: this
    # measures the server, not the limiter (docs/security.md).
    env["MEDMESH_RATE_LIMIT_ENABLED"] = "false"
    env["PYTHONUNBUFFERED"] = "1"  # the log is complete when it is shown after a failure
    return env


# --- provisioning -----------------------------------------------------------------------------


async def provision(url: str, senders: int) -> Provisioned:
    """Migrate the database and create the patients, devices and token of a run."""
    db = Database(url)
    try:
        await migrate.upgrade(db)
        throughput_patient = await provisioning.create_patient(
            db, family="Bench", given="Mark", identifier="BENCH-1"
        )
        found: list[Sender] = []
        for k in range(senders):
            cred = await provisioning.register_device(db, display_name=f"bench sender {k}")
            await provisioning.assign_device(
                db, cred.device_id, throughput_patient.id, ASSIGNED_FROM
            )
            start = THROUGHPUT_EPOCH + timedelta(days=k)
            found.append(Sender(cred.device_id, cred.secret, start))
        search_patient = await provisioning.create_patient(
            db, family="Bench", given="Search", identifier="BENCH-2"
        )
        cred = await provisioning.register_device(db, display_name="bench search device")
        await provisioning.assign_device(db, cred.device_id, search_patient.id, ASSIGNED_FROM)
        token = await provisioning.issue_service_token(db, name="bench", scopes="system/*.rs")
    finally:
        await db.dispose()
    search_sender = Sender(cred.device_id, cred.secret, SEARCH_DAY)
    return Provisioned(found, search_sender, search_patient.id, token)


# --- the server -------------------------------------------------------------------------------


async def wait_healthy(base_url: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    """Poll /healthz until it answers 200; raise if the server exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=0.5) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"server exited early:\n{tail(log_path)}")
            try:
                if (await client.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT:.0f} s:\n{tail(log_path)}")


async def stop(process: asyncio.subprocess.Process) -> None:
    """Terminate the server, killing it if it does not exit within 10 s."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()


@asynccontextmanager
async def running_server(
    url: str, workdir: Path, settings: dict[str, str] | None = None, args: Sequence[str] = ()
) -> AsyncIterator[Server]:
    """A `medmesh serve` child process on `url`'s database, stopped on exit; `settings`: more
    MEDMESH_* environment for it."""
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            venv_python(),
            "-m",
            "medmesh",
            "serve",
            "--port",
            str(port),
            *args,
            env={**server_env(url), **(settings or {})},
            cwd=workdir,  # no stray .env from the caller's directory
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        await wait_healthy(base_url, process, log_path)
        yield Server(base_url, process.pid, time.perf_counter() - started, log_path)
    except Exception:
        log(f"server log (last lines):\n{tail(log_path)}")
        raise
    finally:
        await stop(process)


# --- ingest -----------------------------------------------------------------------------------


async def post_batch(client: httpx.AsyncClient, sender: Sender, size: int) -> float:
    """Send the sender's next batch; check every reading was accepted; return seconds taken."""
    body = sender.next_batch(size)
    started = time.perf_counter()
    response = await client.post(
        "/ingest/v1/readings",
        json=body,
        headers={"Authorization": f"Bearer {sender.secret}"},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")
    receipt = response.json()
    if receipt["accepted"] != size:
        raise RuntimeError(f"ingest accepted {receipt['accepted']} of {size}: {receipt}")
    return elapsed


async def send_loop(
    client: httpx.AsyncClient, sender: Sender, size: int, count: int, deadline: float
) -> list[float]:
    """Up to `count` batches, one after another, stopping early at `deadline`."""
    latencies: list[float] = []
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        latencies.append(await post_batch(client, sender, size))
    return latencies


async def measure_ingest(
    client: httpx.AsyncClient,
    server: Server,
    backend: str,
    senders: list[Sender],
    size: int,
    opts: Options,
) -> IngestFigure:
    """Readings/second with every sender posting `size`-reading batches concurrently."""
    count = opts.single_requests if size == 1 else opts.hundred_requests
    warm = [send_loop(client, s, size, opts.warmup, float("inf")) for s in senders]
    await asyncio.gather(*warm)
    mark = cpu_mark(server)
    started = time.perf_counter()
    deadline = time.monotonic() + opts.max_seconds
    results = await asyncio.gather(*(send_loop(client, s, size, count, deadline) for s in senders))
    seconds = time.perf_counter() - started
    cpu = cpu_since(server, mark)
    latencies = [x for r in results for x in r]
    readings = len(latencies) * size
    return IngestFigure(backend, size, readings, len(latencies), seconds, cpu, latencies)


# --- search -----------------------------------------------------------------------------------


async def load_day(client: httpx.AsyncClient, sender: Sender) -> None:
    """One day of one-per-minute heart rate for the search patient, in batches of 100."""
    headers = {"Authorization": f"Bearer {sender.secret}"}
    for first in range(0, MINUTES_PER_DAY, LOAD_BATCH):
        minutes = range(first, min(first + LOAD_BATCH, MINUTES_PER_DAY))
        body = {"readings": [day_reading(sender.start, m) for m in minutes]}
        response = await client.post("/ingest/v1/readings", json=body, headers=headers)
        if response.status_code != 202 or response.json()["accepted"] != len(minutes):
            raise RuntimeError(f"loading the day failed: {response.status_code} {response.text}")


def day_reading(day: datetime, minute: int) -> dict[str, Any]:
    """The reading of minute `minute` of the searched day."""
    moment = day + timedelta(minutes=minute)
    return {
        "id": f"day-{minute}",
        "type": "heart-rate",
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "value": 55 + minute % 50,
        "unit": "/min",
    }


def search_params(patient_id: str, day: datetime) -> httpx.QueryParams:
    """The query of a 24-hour heart-rate chart for one patient (httpx encodes the `|`)."""
    end = day + timedelta(days=1)
    return httpx.QueryParams(
        [
            ("patient", patient_id),
            ("code", HEART_RATE_LOINC),
            ("date", f"ge{day:%Y-%m-%dT%H:%M:%SZ}"),
            ("date", f"lt{end:%Y-%m-%dT%H:%M:%SZ}"),
            ("_count", "1000"),
        ]
    )


async def fetch_day(
    client: httpx.AsyncClient, params: httpx.QueryParams, headers: dict[str, str]
) -> tuple[int, int]:
    """The whole 24-hour search, following `next` links; returns (entries, pages).

    The server caps a page at 1000 entries (MAX_COUNT), so the day's 1440 take two pages.
    """
    response = await client.get("/fhir/Observation", params=params, headers=headers)
    entries, pages = 0, 0
    while True:
        bundle = checked_bundle(response)
        entries += len(bundle.get("entry", []))
        pages += 1
        next_url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        if next_url is None:
            return entries, pages
        response = await client.get(next_url, headers=headers)


def checked_bundle(response: httpx.Response) -> dict[str, Any]:
    """The searchset Bundle of a 200 answer; raise on anything else."""
    if response.status_code != 200:
        raise RuntimeError(f"search answered {response.status_code}: {response.text[:300]}")
    bundle: dict[str, Any] = response.json()
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        raise RuntimeError(f"search answered a {bundle.get('resourceType')}, not a Bundle")
    return bundle


async def measure_search(
    url: str,
    client: httpx.AsyncClient,
    server: Server,
    backend: str,
    provisioned: Provisioned,
    opts: Options,
) -> SearchFigure:
    """Latency of the whole 24-hour search (all pages), searches one after another."""
    await load_day(client, provisioned.search_sender)
    params = search_params(provisioned.search_patient_id, provisioned.search_sender.start)
    headers = {"Authorization": f"Bearer {provisioned.token}"}
    for _ in range(opts.warmup):
        await fetch_day(client, params, headers)
    latencies: list[float] = []
    entries = pages = 0
    # This process holds medmesh, SQLAlchemy and the provisioning's objects: a full collection
    # of that heap in a timed search cost up to 50 ms. A client of the API holds none of it,
    # and the server freezes its own start-up heap in the same way (app.py).
    gc.collect()
    gc.freeze()
    logged_from = server.log_path.stat().st_size
    mark = cpu_mark(server)
    began = time.perf_counter()
    for _ in range(opts.searches):
        started = time.perf_counter()
        entries, pages = await fetch_day(client, params, headers)
        latencies.append(time.perf_counter() - started)
        if entries != MINUTES_PER_DAY:
            raise RuntimeError(f"search found {entries} entries, expected {MINUTES_PER_DAY}")
    seconds = time.perf_counter() - began
    cpu = cpu_since(server, mark)
    limit = await bare_select(url, provisioned, opts.searches)
    in_server = server_times(server.log_path, logged_from, pages, opts.searches)
    return SearchFigure(backend, entries, pages, seconds, cpu, latencies, limit, in_server)


_SEARCH_LOGGED = re.compile(rb"GET /fhir/Observation 200 ([0-9.]+) ms")


def server_times(log_path: Path, offset: int, pages: int, searches: int) -> list[float]:
    """Each timed search's time in the server's app, its pages summed, from the request log
    lines written after `offset` (empty when the log does not have them all)."""
    with log_path.open("rb") as log_file:
        log_file.seek(offset)
        logged = [float(m.group(1)) / 1000 for m in _SEARCH_LOGGED.finditer(log_file.read())]
    if len(logged) < pages * searches:
        return []
    logged = logged[: pages * searches]
    return [sum(logged[i : i + pages]) for i in range(0, len(logged), pages)]


async def bare_select(url: str, provisioned: Provisioned, times: int) -> list[float]:
    """The limit of the search: the same day's rows selected, as stored (sealed values, no
    decryption, no FHIR, no HTTP), from this process, `times` times."""
    day = provisioned.search_sender.start
    query = (
        select(observations)
        .where(
            observations.c.patient_id == provisioned.search_patient_id,
            observations.c.code == HEART_RATE_LOINC.rpartition("|")[2],
            observations.c.effective >= day,
            observations.c.effective < day + timedelta(days=1),
        )
        .order_by(observations.c.effective, observations.c.id)
    )
    db = Database(url)
    took: list[float] = []
    try:
        for _ in range(times):
            started = time.perf_counter()
            async with db.read() as conn:
                rows = (await conn.execute(query)).all()
            took.append(time.perf_counter() - started)
            if len(rows) != MINUTES_PER_DAY:
                raise RuntimeError(f"bare SELECT found {len(rows)} rows")
    finally:
        await db.dispose()
    return took


# --- one backend ------------------------------------------------------------------------------


async def bench_backend(
    backend: str, url: str, workdir: Path, opts: Options, report: Report
) -> None:
    """Provision, start the server, and measure ingest and search on one database."""
    log(f"[{backend}] provisioning {opts.senders} sender devices and a search patient")
    provisioned = await provision(url, opts.senders)
    async with running_server(url, workdir) as server:
        log(
            f"[{backend}] server up at {server.base_url} (pid {server.pid}) "
            f"after {server.startup_seconds:.1f} s"
        )
        limits = httpx.Limits(max_connections=opts.senders + 2)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
            for size in (1, 100):
                figure = await measure_ingest(
                    client, server, backend, provisioned.senders, size, opts
                )
                report.ingest.append(figure)
                log(
                    f"[{backend}] batch {size:>3}: {figure.rate:,.0f} readings/s "
                    f"({figure.requests} requests in {figure.seconds:.1f} s, "
                    f"cpu server/client {figure.cpu.shares(figure.seconds)})"
                )
            search = await measure_search(url, client, server, backend, provisioned, opts)
            report.search.append(search)
            log(
                f"[{backend}] search-24h: p50 {percentile(search.latencies, 50) * 1000:.1f} ms, "
                f"p95 {percentile(search.latencies, 95) * 1000:.1f} ms "
                f"(cpu server/client {search.cpu.shares(search.seconds)}); limit, bare SELECT "
                f"of the same rows: p50 {ms(search.limit, 50)} ms, p95 {ms(search.limit, 95)} ms"
            )
            if search.in_server:
                log(
                    f"[{backend}] search-24h in the server's app (request log, pages summed): "
                    f"p50 {ms(search.in_server, 50)} ms, p95 {ms(search.in_server, 95)} ms"
                )


# --- output -----------------------------------------------------------------------------------


async def print_run(opts: Options) -> None:
    """The machine, and what this run does."""
    await print_machine(postgres_url=opts.postgres_url if "postgresql" in opts.backends else None)
    log(
        f"run:        {opts.senders} concurrent senders; per sender {opts.single_requests} x 1 "
        f"and {opts.hundred_requests} x 100 readings (cap {opts.max_seconds:g} s per phase); "
        f"{opts.searches} searches"
    )
    log("")


def print_table(report: Report) -> None:
    """The summary table (latencies in ms; cpu: server/client process, % of one core)."""
    log("")
    log(
        f"{'backend':<12}{'batch':>5}{'readings/s':>12}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'cpu srv/cli':>13}  (requests, seconds)"
    )
    for f in report.ingest:
        log(
            f"{f.backend:<12}{f.batch:>5}{f.rate:>12,.0f}{ms(f.latencies, 50):>9}"
            f"{ms(f.latencies, 95):>9}{f.cpu.shares(f.seconds):>13}"
            f"  ({f.requests}, {f.seconds:.1f})"
        )
    log("")
    log(
        f"{'backend':<12}{'search-24h p50 ms':>18}{'p95 ms':>9}{'limit p50':>10}{'p95':>7}"
        f"{'ratio p50':>10}{'p95':>7}{'cpu srv/cli':>13}{'entries':>9}{'pages':>7}"
        f"{'searches':>10}"
    )
    for s in report.search:
        log(
            f"{s.backend:<12}{ms(s.latencies, 50):>18}{ms(s.latencies, 95):>9}"
            f"{ms(s.limit, 50):>10}{ms(s.limit, 95):>7}"
            f"{ratio(s.latencies, s.limit, 50):>10}{ratio(s.latencies, s.limit, 95):>7}"
            f"{s.cpu.shares(s.seconds):>13}{s.entries:>9}{s.pages:>7}"
            f"{len(s.latencies):>10}"
        )
    log("target: search-24h p95 < 50 ms; limit: a bare SELECT of the same 1440 rows, same run")
    for reason in report.skipped:
        log(f"skipped: {reason}")
    log(f"load at the end: {load_average()}")


def ratio(figure: Sequence[float], limit: Sequence[float], pct: int) -> str:
    """A figure's percentile over its limit's, e.g. `4.2x`."""
    if not limit:
        return "n/a"
    return f"{percentile(figure, pct) / max(percentile(limit, pct), 1e-9):.1f}x"


def ms(latencies: Sequence[float], pct: int) -> str:
    """A latency percentile in milliseconds, formatted."""
    return f"{percentile(latencies, pct) * 1000:.1f}"


# --- entry point ------------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Command-line options; --quick shrinks every count for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_options(parser)
    parser.add_argument("--senders", type=int, default=8, help="concurrent devices (default 8)")
    parser.add_argument(
        "--single-requests", type=int, default=150, help="1-reading batches per sender"
    )
    parser.add_argument(
        "--hundred-requests", type=int, default=25, help="100-reading batches per sender"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=20.0, help="time cap of each ingest phase"
    )
    parser.add_argument("--searches", type=int, default=200, help="24-hour searches to time")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each phase")
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke run")
    args = parser.parse_args(argv)
    if min(args.senders, args.single_requests, args.hundred_requests, args.searches) < 1:
        parser.error("counts must be at least 1")
    if args.max_seconds <= 0 or args.warmup < 0:
        parser.error("--max-seconds must be positive and --warmup not negative")
    backends = tuple(args.backend or ("sqlite", "postgresql"))
    if args.quick:
        return Options(backends, args.postgres_url, min(args.senders, 4), 5, 2, 5.0, 5, 1)
    return Options(
        backends,
        args.postgres_url,
        args.senders,
        args.single_requests,
        args.hundred_requests,
        args.max_seconds,
        args.searches,
        args.warmup,
    )


async def main(opts: Options) -> Report:
    """Run every chosen backend in turn; SIGTERM cancels the run (servers stop, data dropped)."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await print_run(opts)
    report = Report()

    async def run(backend: str, url: str, workdir: Path) -> None:
        await bench_backend(backend, url, workdir, opts, report)

    await on_each_backend(opts.backends, opts.postgres_url, run, report.skipped)
    print_table(report)
    return report


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_options()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted; servers stopped and benchmark data removed")
