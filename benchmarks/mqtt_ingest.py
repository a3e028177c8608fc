"""MQTT ingest throughput of medmesh worker processes, on SQLite and PostgreSQL.

For each backend the script provisions devices (one patient each, assigned from 2020-01-01),
then runs phases of 1 and of 2 ingest workers (`python -m medmesh ingest-worker`, one MQTT 5
shared subscription group) against a PRIVATE Mosquitto broker it starts on a free port of
127.0.0.1 (the machine's own broker is not touched). Each phase gets a fresh broker and fresh
workers, so the per-worker message counts (logged by each worker on SIGTERM) are the phase's.

Each device publishes with its own `mosquitto_pub -l` process (MQTT 5, QoS 1; `--publisher
paho`: paho-mqtt connections from a few threads of this process, as before 2026-12-05); every
message is a native batch `{"readings": [...]}` of 1 or of 10 readings. The clock runs from
the first publish until the observations table holds every reading (the devices' patients'
rows counted, every 50 ms near the end): the figure is end-to-end committed throughput. The
publish rate (first publish to last PUBACK from the broker) is printed too. Publishers, workers
and broker share the machine, so on a small one they compete for CPU; each phase's CPU use is
printed per process kind.

Run: `.venv/bin/python benchmarks/mqtt_ingest.py` (`--help` for the counts, `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Table, func, select

from _common import (
    Broker,
    add_backend_options,
    cancel_on_sigterm,
    load_average,
    log,
    mosquitto_binary,
    on_each_backend,
    print_machine,
    process_cpu,
    stop_process,
    tail,
    venv_python,
)
from medmesh import provisioning
from medmesh.ingest.paho_properties import share_property_tables
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import dead_letters, device_assignments, observations

ASSIGNED_FROM = datetime(2020, 1, 1, tzinfo=UTC)
EPOCH = datetime(2021, 1, 1, tzinfo=UTC)  # phase p: 30 days later each; device k: k hours
TOPIC = "medmesh/v1/devices/{}/readings"
SHARED_GROUP = "medmesh-bench"
POLL_SECONDS = 0.05
STARTUP_TIMEOUT = 60.0  # a worker imports and migrates in ~3 s on an idle 2-core machine
PUBACK_TIMEOUT = 120.0
SETTLE_SECONDS = 0.5
DEPLOY_MAX_QUEUED = 100_000  # deploy/mosquitto/mosquitto.conf; Mosquitto's default is 1000
STOPPED = re.compile(rb"stopped after (\d+) messages")


@dataclass(frozen=True, slots=True)
class Options:
    """What to run and how much of it."""

    backends: tuple[str, ...]
    postgres_url: str  # maintenance database; the run creates and drops its own
    devices: int
    publishers: int  # paho publisher threads, the devices shared among them
    workers: tuple[int, ...]  # worker counts to run
    shapes: tuple[tuple[int, int], ...]  # (readings per message, messages per phase)
    timeout: float  # per phase, for every reading to be committed
    max_queued: int  # broker's max_queued_messages per client
    publisher: str = "mosquitto_pub"  # or "paho"


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds used during a phase: all workers, the broker, this (publisher) process."""

    workers: float | None
    broker: float | None
    client: float

    def shares(self, seconds: float) -> str:
        """Percentages of one core, workers/broker/publishers, e.g. `150/20/60`."""
        parts = [self.workers, self.broker, self.client]
        return "/".join("?" if p is None else f"{p / seconds * 100:.0f}" for p in parts)


@dataclass(frozen=True, slots=True)
class Figure:
    """One phase: a backend, a number of workers and a message shape."""

    backend: str
    workers: int
    per_message: int  # readings per message
    messages: int
    seconds: float  # first publish -> all readings committed (or the timeout)
    publish_seconds: float  # first publish -> last PUBACK
    stored: int  # readings committed within `seconds`
    complete: bool
    per_worker: list[int | None]
    cpu: Cpu
    warmup: int  # messages sent before the clock started (included in `per_worker`)

    @property
    def messages_per_second(self) -> float:
        """Committed messages per second, end to end."""
        return self.stored / self.per_message / self.seconds if self.seconds > 0 else 0.0

    @property
    def readings_per_second(self) -> float:
        """Committed readings per second, end to end."""
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    @property
    def publish_rate(self) -> float:
        """Messages per second accepted (PUBACKed) by the broker."""
        return self.messages / self.publish_seconds if self.publish_seconds > 0 else 0.0


@dataclass(slots=True)
class Report:
    """Every figure of a run, and the backends skipped with the reason."""

    figures: list[Figure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# --- helpers ----------------------------------------------------------------------------------


# --- the broker and the workers ---------------------------------------------------------------


@dataclass
class Worker:
    """`medmesh ingest-worker` in a child process, logging to a file."""

    database_url: str
    broker_port: int
    client_id: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """This environment without other MEDMESH_* settings, plus the worker's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDMESH_")}
        env.update(
            MEDMESH_DATABASE_URL=self.database_url,
            MEDMESH_MQTT_HOST="127.0.0.1",
            MEDMESH_MQTT_PORT=str(self.broker_port),
            MEDMESH_MQTT_SHARED_GROUP=SHARED_GROUP,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        """Start the worker and wait until it has subscribed."""
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [venv_python(), "-m", "medmesh", "ingest-worker", "--client-id", self.client_id],
                env=self.env(),
                cwd=self.log_path.parent,  # no stray .env from the caller's directory
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if b"subscribed" in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.client_id} did not subscribe:\n{tail(self.log_path)}")

    def cpu(self) -> float | None:
        """CPU seconds the worker has used so far."""
        return None if self.process is None else process_cpu(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (the worker logs how many messages it stored), SIGKILL after 15 s."""
        if self.process is not None:
            stop_process(self.process)

    def stopped_count(self) -> int | None:
        """N of the worker's last "MQTT ingest stopped after N messages" line, if any."""
        try:
            found = STOPPED.findall(self.log_path.read_bytes())
        except OSError:
            return None
        return int(found[-1]) if found else None


def stop_all(workers: Sequence[Worker], broker: Broker) -> None:
    """Stop the workers (all at once, then wait for each), then the broker."""
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.stop()
    broker.stop()


# --- the devices ------------------------------------------------------------------------------


async def provision(url: str, devices: int) -> list[str]:
    """Migrate the database; create `devices` devices, each assigned to its own patient."""
    db = Database(url)
    found: list[str] = []
    try:
        await migrate.upgrade(db)
        for k in range(devices):
            patient = await provisioning.create_patient(
                db, family="Bench", given=f"Device {k}", identifier=f"BENCH-{k}"
            )
            credential = await provisioning.register_device(db, display_name=f"bench device {k}")
            await provisioning.assign_device(db, credential.device_id, patient.id, ASSIGNED_FROM)
            found.append(credential.device_id)
    finally:
        await db.dispose()
    return found


def payloads(tag: str, start: datetime, messages: int, per_message: int) -> list[bytes]:
    """One device's messages: native batches of `per_message` readings one second apart."""
    bodies: list[bytes] = []
    for n in range(messages):
        readings = []
        for i in range(per_message):
            k = n * per_message + i
            moment = start + timedelta(seconds=k)
            readings.append(
                {
                    "id": f"{tag}-{k}",
                    "type": "heart-rate",
                    "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "value": 60 + k % 40,
                    "unit": "/min",
                }
            )
        bodies.append(orjson.dumps({"readings": readings}))
    return bodies


def connect_publishers(port: int, devices: Sequence[str]) -> list[paho.Client]:
    """One MQTT 5 connection per device, each with its network thread, connected (paho with
    the Properties tables shared, as in medmesh's worker)."""
    share_property_tables()
    clients: list[paho.Client] = []
    try:
        for _ in devices:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"bench-pub-{uuid.uuid4().hex[:12]}",
                protocol=paho.MQTTv5,
            )
            client.connect("127.0.0.1", port)
            client.loop_start()
            clients.append(client)
        deadline = time.monotonic() + 10
        while not all(c.is_connected() for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("publishers did not connect to the broker")
            time.sleep(0.02)
    except BaseException:
        disconnect(clients)
        raise
    return clients


def disconnect(clients: Sequence[paho.Client]) -> None:
    """Disconnect every publisher and stop its network thread."""
    for client in clients:
        with contextlib.suppress(Exception):
            client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_stop()


def publish_all(
    clients: Sequence[paho.Client],
    devices: Sequence[str],
    bodies: Sequence[Sequence[bytes]],
    threads: int,
) -> float:
    """Publish every device's messages (QoS 1) from `threads` threads, each taking its share
    of the devices in turn; return the perf_counter() of the last PUBACK."""
    failures: list[str] = []
    lock = threading.Lock()

    def run(share: Sequence[int]) -> None:
        infos: list[paho.MQTTMessageInfo] = []
        longest = max((len(bodies[d]) for d in share), default=0)
        for n in range(longest):
            for d in share:
                if n < len(bodies[d]):
                    infos.append(clients[d].publish(TOPIC.format(devices[d]), bodies[d][n], qos=1))
        deadline = time.monotonic() + PUBACK_TIMEOUT
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        missing = sum(1 for info in infos if not info.is_published())
        if missing:
            with lock:
                failures.append(f"{missing} of {len(infos)} messages not acknowledged")

    shares = [list(range(t, len(devices), threads)) for t in range(threads)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(run, share) for share in shares if share]:
            future.result()
    if failures:
        raise RuntimeError("publishing failed: " + "; ".join(failures))
    return time.perf_counter()


def publish_with_mosquitto_pub(
    port: int, devices: Sequence[str], bodies: Sequence[Sequence[bytes]], directory: Path
) -> float:
    """Publish every device's messages (QoS 1, MQTT 5) with one `mosquitto_pub -l` a device,
    its messages one a line (C, libmosquitto: the devices' side takes little of the machine,
    where paho in this process took 35-42 % of a core); return the perf_counter() once every
    one has exited, which it does after its last PUBACK."""
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        raise RuntimeError("mosquitto_pub is not installed (Debian: mosquitto-clients)")
    files = []
    for device, messages in zip(devices, bodies, strict=True):
        path = directory / f"{device}-{uuid.uuid4().hex[:8]}.lines"
        path.write_bytes(b"".join(body + b"\n" for body in messages))
        files.append(path)
    processes = []
    for device, path in zip(devices, files, strict=True):
        with path.open("rb") as lines:
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        *("-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-l"),
                        *("-i", f"bench-pub-{uuid.uuid4().hex[:12]}", "-t", TOPIC.format(device)),
                    ],
                    stdin=lines,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
    failures = []
    try:
        for process in processes:
            _, error = process.communicate(timeout=PUBACK_TIMEOUT)
            if process.returncode != 0:
                failures.append(
                    error.decode(errors="replace").strip() or f"exit {process.returncode}"
                )
        finished = time.perf_counter()
    finally:  # one that hangs (no PUBACK within the timeout) is not left behind
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for path in files:
            path.unlink()
    if failures:
        raise RuntimeError("mosquitto_pub failed: " + "; ".join(failures[:3]))
    return finished


Publish = Callable[[Sequence[Sequence[bytes]]], float]


def publishers(
    opts: Options, port: int, devices: Sequence[str], directory: Path
) -> tuple[Publish, Callable[[], None]]:
    """How this run publishes each device's messages (`--publisher`), and how to let go of the
    publishers after: `mosquitto_pub` processes started for each round of messages, or paho
    connections made now."""
    if opts.publisher == "mosquitto_pub":
        return (lambda bodies: publish_with_mosquitto_pub(port, devices, bodies, directory)), (
            lambda: None
        )
    clients = connect_publishers(port, devices)
    return (lambda bodies: publish_all(clients, devices, bodies, opts.publishers)), (
        lambda: disconnect(clients)
    )


# --- measuring --------------------------------------------------------------------------------


async def count(db: Database, table: Table) -> int:
    """COUNT(*) of a table."""
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def patients_of(db: Database, devices: Sequence[str]) -> list[str]:
    """The patients the devices are assigned to."""
    async with db.read() as conn:
        found = await conn.execute(
            select(device_assignments.c.patient_id).where(
                device_assignments.c.device_id.in_(devices)
            )
        )
        return sorted(set(found.scalars()))


async def stored_for(db: Database, patients: Sequence[str]) -> int:
    """Observations of these patients: an index scan, where a COUNT(*) of the whole table
    polled every 50 ms scanned every row of a database holding other history and took CPU
    and I/O from the workers measured (42 % of PostgreSQL's active samples in side_by_side.py
    after 30 days of history)."""
    async with db.read() as conn:
        found = await conn.execute(
            select(func.count())
            .select_from(observations)
            .where(observations.c.patient_id.in_(patients))
        )
        return int(found.scalar_one())


async def wait_for_count(
    db: Database, patients: Sequence[str], target: int, within: float
) -> tuple[int, float]:
    """Poll until the patients have `target` observations, for at most `within` seconds;
    return (count, perf_counter() of that count).

    Every POLL_SECONDS near the end; before that, after a quarter of the time the rest should
    take at the rate so far (at most half a second). A count reads every row counted so far:
    polled every 50 ms through a phase of 400,000 readings, it was 40 % of PostgreSQL's active
    samples (pg_stat_activity sampled every 5 ms)."""
    deadline = time.monotonic() + within
    first, began = await stored_for(db, patients), time.perf_counter()
    stored, now = first, began
    while stored < target and time.monotonic() < deadline:
        rate = (stored - first) / (now - began) if now > began else 0.0
        wait = (target - stored) / rate / 4 if rate > 0 else POLL_SECONDS
        await asyncio.sleep(min(max(wait, POLL_SECONDS), 0.5))
        stored, now = await stored_for(db, patients), time.perf_counter()
    return stored, now


def cpu_mark(workers: Sequence[Worker], broker: Broker) -> Cpu:
    """CPU seconds so far of the workers (summed), the broker and this process."""
    parts = [w.cpu() for w in workers]
    used = None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    broker_cpu = None if broker.process is None else process_cpu(broker.process.pid)
    children = os.times()  # the mosquitto_pub publishers, once they have exited
    return Cpu(
        used, broker_cpu, time.process_time() + children.children_user + children.children_system
    )


def cpu_since(workers: Sequence[Worker], broker: Broker, mark: Cpu) -> Cpu:
    """CPU seconds used since `mark`."""
    now = cpu_mark(workers, broker)

    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return Cpu(
        delta(now.workers, mark.workers), delta(now.broker, mark.broker), now.client - mark.client
    )


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase runs."""

    index: int
    workers: int
    per_message: int
    messages: int


async def run_phase(
    backend: str,
    url: str,
    db: Database,
    devices: Sequence[str],
    phase: Phase,
    workdir: Path,
    opts: Options,
) -> Figure:
    """Fresh broker and workers; warm up; publish; wait for every reading to be committed."""
    directory = workdir / f"phase-{phase.index}"
    directory.mkdir()
    broker = Broker(directory, opts.max_queued)
    workers: list[Worker] = []
    try:
        await asyncio.to_thread(broker.start)
        workers = [
            Worker(url, broker.port, f"bench-{n}", directory / f"worker-{n}.log")
            for n in range(phase.workers)
        ]
        await asyncio.gather(*(asyncio.to_thread(w.start) for w in workers))
        publish, close = await asyncio.to_thread(publishers, opts, broker.port, devices, directory)
        try:
            # Warm-up: a message per device, so every worker has met the devices and opened
            # its database connections before the clock starts.
            warm = [payloads(f"p{phase.index}-warm", EPOCH, 1, 1) for _ in devices]
            patients = await patients_of(db, devices)
            target = await stored_for(db, patients) + len(devices)
            await asyncio.to_thread(publish, warm)
            stored, _ = await wait_for_count(db, patients, target, opts.timeout)
            if stored < target:
                raise RuntimeError(f"warm-up: {stored} of {target} readings stored")
            per_device = max(1, phase.messages // len(devices))
            bodies = [
                payloads(
                    f"p{phase.index}",
                    EPOCH + timedelta(days=30 * phase.index, hours=k),
                    per_device,
                    phase.per_message,
                )
                for k in range(len(devices))
            ]
            messages = per_device * len(devices)
            baseline = await stored_for(db, patients)
            target = baseline + messages * phase.per_message
            mark = cpu_mark(workers, broker)
            began = time.perf_counter()
            publishing = asyncio.create_task(asyncio.to_thread(publish, bodies))
            stored, done = await wait_for_count(db, patients, target, opts.timeout)
            cpu = cpu_since(workers, broker, mark)
            published = await publishing
            # SIGTERM cancels a worker wherever it is, also between a commit and the PUBACKs
            # (then its count misses that batch, which the broker would deliver again): let
            # the workers finish acknowledging first. Not part of the measured time.
            await asyncio.sleep(SETTLE_SECONDS)
        finally:
            await asyncio.to_thread(close)
    except Exception:
        for worker in workers:
            log(f"{worker.client_id} log (last lines):\n{tail(worker.log_path)}")
        raise
    finally:
        await asyncio.to_thread(stop_all, workers, broker)
    figure = Figure(
        backend,
        phase.workers,
        phase.per_message,
        messages,
        done - began,
        published - began,
        stored - baseline,
        stored >= target,
        [w.stopped_count() for w in workers],
        cpu,
        len(devices),
    )
    if not figure.complete:
        letters = await count(db, dead_letters)
        log(
            f"[{backend}] TIMEOUT after {opts.timeout:g} s: {figure.stored} of "
            f"{messages * phase.per_message} readings stored ({letters} dead letters in all); "
            f"broker: {dropped_note(directory / 'mosquitto.log')}"
        )
    return figure


def dropped_note(broker_log: Path) -> str:
    """What the broker's log says about messages it dropped (a full queue drops QoS 1)."""
    try:
        lines = broker_log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    dropped = [line for line in lines if "dropped" in line.lower()]
    if not dropped:
        return "its log mentions no dropped messages"
    return f"{len(dropped)} log line(s) on dropped messages, e.g. {dropped[0]!r}"


def per_worker_text(counts: Sequence[int | None]) -> str:
    """Per-worker message counts, e.g. `2510+2510`."""
    return "+".join("?" if c is None else str(c) for c in counts)


async def bench_backend(
    backend: str, url: str, workdir: Path, opts: Options, report: Report
) -> None:
    """Provision the devices, then run every (workers, shape) phase on one database."""
    log(f"[{backend}] provisioning {opts.devices} devices (one patient each)")
    devices = await provision(url, opts.devices)
    db = Database(url)
    try:
        index = 0
        for workers in opts.workers:
            for per_message, messages in opts.shapes:
                phase = Phase(index, workers, per_message, messages)
                index += 1
                figure = await run_phase(backend, url, db, devices, phase, workdir, opts)
                report.figures.append(figure)
                log(
                    f"[{backend}] {workers} worker(s), {per_message} reading(s)/message: "
                    f"{figure.messages_per_second:,.0f} messages/s, "
                    f"{figure.readings_per_second:,.0f} readings/s "
                    f"({figure.messages} in {figure.seconds:.2f} s; published in "
                    f"{figure.publish_seconds:.2f} s); per worker "
                    f"{per_worker_text(figure.per_worker)}; cpu % wrk/brk/pub "
                    f"{figure.cpu.shares(figure.seconds)}"
                )
                reported = figure.per_worker
                expected = figure.messages + figure.warmup
                if None in reported or sum(c for c in reported if c is not None) != expected:
                    log(
                        f"[{backend}] note: the workers reported {per_worker_text(reported)} "
                        f"messages, not {expected} in all (a batch committed but not "
                        f"acknowledged at SIGTERM, or delivered twice)"
                    )
    finally:
        await db.dispose()


# --- output -----------------------------------------------------------------------------------


async def print_run(opts: Options) -> None:
    """The machine, and what this run does."""
    await print_machine(
        postgres_url=opts.postgres_url if "postgresql" in opts.backends else None,
        broker=True,
        python=f"; paho-mqtt {importlib.metadata.version('paho-mqtt')}",
    )
    shapes = ", ".join(f"{m} messages x {r} reading(s)" for r, m in opts.shapes)
    by = (
        "one mosquitto_pub each"
        if opts.publisher == "mosquitto_pub"
        else f"paho, {opts.publishers} publisher threads"
    )
    log(
        f"run:        {opts.devices} devices ({by}; QoS 1, "
        f"MQTT 5); {', '.join(map(str, opts.workers))} worker(s); per phase {shapes}; "
        f"broker max_queued_messages {opts.max_queued}; timeout {opts.timeout:g} s per phase"
    )
    log("")


def print_table(report: Report) -> None:
    """The summary table."""
    log("")
    log(
        f"{'backend':<12}{'workers':>7}{'readings/msg':>14}{'messages/s':>12}{'readings/s':>12}"
        f"  {'(messages, seconds)':<21}{'per-worker':<12}{'publish msg/s':>14}"
        f"  cpu % wrk/brk/pub"
    )
    for f in report.figures:
        mark = "" if f.complete else "  TIMEOUT"
        log(
            f"{f.backend:<12}{f.workers:>7}{f.per_message:>14}{f.messages_per_second:>12,.0f}"
            f"{f.readings_per_second:>12,.0f}  {f'({f.messages}, {f.seconds:.2f})':<21}"
            f"{per_worker_text(f.per_worker):<12}{f.publish_rate:>14,.0f}"
            f"  {f.cpu.shares(f.seconds)}{mark}"
        )
    if report.figures:
        log(
            f"per-worker: messages each worker reported on SIGTERM, including the "
            f"{report.figures[0].warmup} warm-up messages; cpu: % of one core over the phase "
            f"(all workers / broker / this process: publishers and poller)"
        )
    for reason in report.skipped:
        log(f"skipped: {reason}")
    log(f"load at the end: {load_average()}")


# --- entry point ------------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Command-line options; --quick shrinks the counts for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_options(parser)
    parser.add_argument("--devices", type=int, default=20, help="devices (default 20)")
    parser.add_argument(
        "--publisher",
        choices=("mosquitto_pub", "paho"),
        default="mosquitto_pub",
        help="the devices' client: one mosquitto_pub process a device (default), or paho "
        "connections in this process",
    )
    parser.add_argument(
        "--publishers", type=int, default=4, help="paho publisher threads (default 4)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="ingest worker processes of a phase (repeatable; default 1 and 2)",
    )
    parser.add_argument(
        "--single", type=int, default=5000, help="messages of 1 reading per phase (default 5000)"
    )
    parser.add_argument(
        "--ten", type=int, default=1000, help="messages of 10 readings per phase (default 1000)"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="per phase, for all readings to be stored"
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=DEPLOY_MAX_QUEUED,
        help="broker max_queued_messages (default as deploy/mosquitto: 100000; Mosquitto's "
        "own default, 1000, drops QoS 1 messages a busy worker has not taken yet)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args(argv)
    workers = tuple(args.workers or ((1,) if args.quick else (1, 2)))
    if min(args.devices, args.publishers, args.single, args.ten, *workers) < 1:
        parser.error("counts must be at least 1")
    if args.timeout <= 0 or args.max_queued < 0:
        parser.error("--timeout must be positive and --max-queued not negative")
    backends = tuple(args.backend or ("sqlite", "postgresql"))
    single, ten, timeout = args.single, args.ten, args.timeout
    if args.quick:
        single, ten, timeout = min(single, 200), min(ten, 50), min(timeout, 30.0)
    return Options(
        backends,
        args.postgres_url,
        args.devices,
        min(args.publishers, args.devices),
        workers,
        ((1, single), (10, ten)),
        timeout,
        args.max_queued,
        args.publisher,
    )


async def main(opts: Options) -> Report:
    """Run every chosen backend in turn; SIGTERM cancels the run (processes stopped, data gone)."""
    cancel_on_sigterm()
    await print_run(opts)
    if mosquitto_binary() is None:
        log("skipped: the mosquitto broker is not installed")
        return Report(skipped=["mosquitto is not installed"])
    started = time.perf_counter()
    report = Report()

    async def run(backend: str, url: str, workdir: Path) -> None:
        await bench_backend(backend, url, workdir, opts, report)

    await on_each_backend(opts.backends, opts.postgres_url, run, report.skipped)
    print_table(report)
    log(f"total: {time.perf_counter() - started:.0f} s")
    return report


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_options()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted; workers and broker stopped, benchmark data removed")
