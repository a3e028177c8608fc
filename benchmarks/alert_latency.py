"""Alert latency: a device publishes a critical value over MQTT; how long until the alert
reaches a dashboard connected to the event stream? On SQLite and PostgreSQL, idle and under
background load.

For each backend the script provisions, in-process, `--devices` background devices (one
patient each) and one probe patient with its own device per probe sample (so the alert
dedupe never merges two samples), plus a clinician API token. Each phase then starts a
PRIVATE Mosquitto broker on a free port of 127.0.0.1 (anonymous, `max_queued_messages
100000`, `max_inflight_messages 500`; the machine's own broker is not touched) and
`python -m medmesh serve` with MQTT ingest pointed at it, and holds `GET /api/v1/events`
(Server-Sent Events, bearer token) open with httpx, as a dashboard does.

A phase: a child process publishes the background load (paho, QoS 1, native batches of
`--batch` readings, alternately heart rate and SpO2 one minute apart per device, in the past,
normal values: no alerts) at the target rate, round-robin over the devices; after `--warmup`
seconds (and two uncounted warm-up probes) the probes start: every `--spacing` seconds one
probe device publishes one capillary glucose reading of 45 mg/dL (QoS 1). Below 54 mg/dL the
`glucose-low` rule raises a critical alert from that single reading (rules/defaults.py, ADA
level 2). A sample's latency runs from just before the publish to the arrival of the `alert`
event for the probe patient on the SSE stream (both on this process's clock); a sample not
seen within `--timeout` seconds counts as a timeout. Probes are sent on a fixed schedule
(open loop), not after the previous alert arrived, so a slow platform cannot slow the
probing down. The first phase has no background load: the baseline.

The background rate printed as achieved is committed readings per second (COUNT(*) of the
observations table at the start and the end of the probe window, probes not counted); the
child's published (PUBACKed) rate is printed too. A platform that commits less than the
target falls behind: the broker queues the rest, and the probes queue behind it.

Where the time goes (medians): the server stamps a micro-batch's readings with `received_at`
when it starts storing them and the alert with `opened_at` when the rules open it, on the same
machine clock as this process, so each sample splits into publish → received (broker, and
waiting behind the batch being processed), received → opened (the batch's commit, its
`readings` events and the rules of the patients before this one) and opened → on the stream
(the rest of the rules' transaction, its commit, the event bus and SSE). The size of the
micro-batch each probe was stored in (readings sharing its `received_at`) is printed too.

Broker, server, load generator and this process share the machine; each phase's CPU use is
printed per process. Each phase has a fresh broker and server (a backlog left by an overload
does not spill into the next phase); the database is kept for the backend's phases.

`--sustained` adds a last phase offered 80 % of the best rate a loaded phase committed, so the
latency is also measured under a background load the platform actually keeps up with; every
phase that committed at least 95 % of what it was offered is printed as SUSTAINED with its
offered and committed rates, and a run where none did says so.

Run: `.venv/bin/python benchmarks/alert_latency.py` (`--help` for the knobs, `--quick`;
`--quick --sustained --backend postgresql` for a smoke run of the sustained phase).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from _common import (
    Broker,
    add_backend_options,
    cancel_on_sigterm,
    free_port,
    load_average,
    log,
    mosquitto_binary,
    nearest_rank,
    on_each_backend,
    print_machine,
    process_cpu,
    profiled,
    stop_process,
    tail,
    venv_python,
)
from medmesh import provisioning
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import observations

ASSIGNED_FROM = datetime(2020, 1, 1, tzinfo=UTC)
BACKGROUND_EPOCH = datetime(2021, 1, 1, tzinfo=UTC)  # phase p starts 200 days later each
TOPIC = "medmesh/v1/devices/{}/readings"
SHARED_GROUP = "medmesh-bench"
CRITICAL_GLUCOSE = 45  # mg/dL; below 54 the glucose-low rule raises a critical alert
GLUCOSE_RULE = "glucose-low"
WARMUP_PROBES = 2  # per phase, uncounted: the first alert after start-up pays for caches
STARTUP_TIMEOUT = 60.0  # the server starts in ~3 s on an idle 2-core machine
STOP_TIMEOUT = 20.0
MAX_QUEUED = 100_000  # as deploy/mosquitto; Mosquitto's default (1000) drops QoS 1 messages
MAX_INFLIGHT = 500


@dataclass(frozen=True, slots=True)
class Options:
    """What to run and how much of it."""

    backends: tuple[str, ...]
    postgres_url: str  # maintenance database; the run creates and drops its own
    rates: tuple[float, ...]  # background readings/s of the loaded phases
    samples: int  # probe samples per phase
    spacing: float  # seconds between probe publishes
    warmup: float  # seconds of background load before the probes start
    timeout: float  # per sample
    devices: int  # background devices
    batch: int  # background readings per message
    # One more phase at the end, offered 80 % of the best rate a loaded phase committed: the
    # latency under a load the platform actually sustains.
    sustained: bool = False
    profile: Path | None = None  # py-spy collapsed stacks of the server, one file a phase

    @property
    def phases(self) -> tuple[float, ...]:
        """Background rates of every phase: the no-load baseline first."""
        return (0.0, *self.rates)


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe patient and its device: one critical glucose reading in the whole run."""

    patient_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Provisioned:
    background: list[str]  # device ids
    probes: list[Probe]
    token: str  # clinician API token


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe: when it was published and, unless it timed out, when its alert arrived."""

    probe: Probe
    published_wall: float  # time.time() just before the publish
    latency: float | None  # seconds, publish -> alert event on the stream; None: timeout
    arrived_wall: float | None = None
    alert: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds used in the probe window: server, broker, load generator, this process,
    every `postgres` process (the server's backends, and whatever else uses PostgreSQL on
    the machine), and the whole machine (all processes: other work on it shows here)."""

    server: float | None
    broker: float | None
    load: float | None
    bench: float
    postgres: float | None
    machine: float | None

    def shares(self, seconds: float) -> str:
        """Percentages of one core, e.g. `150/20/10/15/0`."""
        parts = [self.server, self.broker, self.load, self.bench, self.postgres]
        return "/".join("-" if p is None else f"{p / seconds * 100:.0f}" for p in parts)

    def machine_share(self, seconds: float) -> str:
        """Busy CPU of the whole machine, e.g. `190/200` (% of one core / cores x 100)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if self.machine is None:
            return "-"
        return f"{self.machine / seconds * 100:.0f}/{cores * 100}"


@dataclass(frozen=True, slots=True)
class Figure:
    """One phase of one backend."""

    backend: str
    target: float  # background readings/s asked for (0: baseline)
    achieved: float  # background readings/s committed during the probe window
    published: float  # background readings/s PUBACKed by the broker (whole load run)
    window: float  # seconds, first probe publish -> last sample done
    samples: list[Sample]
    received: dict[str, datetime]  # probe device id -> its reading's received_at
    batch_sizes: list[int]  # readings in the micro-batch each probe was stored in
    cpu: Cpu
    frames: Counter[str]  # SSE frames by event kind during the window
    log_problems: int  # WARNING/ERROR lines in the server log
    severities: Counter[str]
    backlog: int | None  # background readings published but not committed at the window's end

    @property
    def latencies(self) -> list[float]:
        return [s.latency for s in self.samples if s.latency is not None]

    @property
    def timeouts(self) -> int:
        return sum(1 for s in self.samples if s.latency is None)


@dataclass(slots=True)
class Report:
    figures: list[Figure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# --- helpers ----------------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the broker -------------------------------------------------------------------------------


# --- the server -------------------------------------------------------------------------------


def server_env(url: str, broker_port: int) -> dict[str, str]:
    """This environment without other MEDMESH_* settings, plus the database and the broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDMESH_")}
    env.update(
        MEDMESH_DATABASE_URL=url,
        MEDMESH_MQTT_HOST="127.0.0.1",
        MEDMESH_MQTT_PORT=str(broker_port),
        MEDMESH_MQTT_SHARED_GROUP=SHARED_GROUP,
        MEDMESH_MQTT_CLIENT_ID=f"bench-serve-{uuid.uuid4().hex[:8]}",
        PYTHONUNBUFFERED="1",  # the log is complete when it is shown after a failure
    )
    return env


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_seconds: float

    def problems(self) -> int:
        """WARNING and ERROR lines in the server log so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if line.startswith(("WARNING", "ERROR")))


def spawn_server(url: str, broker_port: int, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [venv_python(), "-m", "medmesh", "serve", "--port", str(port)],
            env=server_env(url, broker_port),
            cwd=log_path.parent,  # no stray .env from the caller's directory
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def subscribed(log_path: Path) -> bool:
    """Whether the server's MQTT ingest has subscribed (it logs so)."""
    try:
        return b"MQTT ingest subscribed" in log_path.read_bytes()
    except OSError:
        return False


@asynccontextmanager
async def running_server(url: str, broker_port: int, directory: Path) -> AsyncIterator[Server]:
    """`medmesh serve` with MQTT ingest, healthy and subscribed; stopped on exit."""
    port = free_port()
    log_path = directory / "server.log"
    process = spawn_server(url, broker_port, port, log_path)
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        await wait_ready(base_url, process, log_path)
        yield Server(base_url, process, log_path, time.perf_counter() - started)
    except Exception:
        log(f"server log (last lines):\n{tail(log_path)}")
        raise
    finally:
        await asyncio.to_thread(stop_process, process)


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /healthz until it answers 200 and the log says MQTT ingest has subscribed."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=0.5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                healthy = (await client.get(f"{base_url}/healthz")).status_code == 200
                if healthy and subscribed(log_path):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT:.0f} s:\n{tail(log_path)}")


# --- the dashboard's event stream --------------------------------------------------------------


class AlertStream:
    """GET /api/v1/events held open; resolves the future waiting for a probe patient's alert
    when its `alert` event arrives. Only alert frames are parsed; the others are counted."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base_url = base_url
        self._token = token
        self.waiting: dict[str, asyncio.Future[tuple[float, float, dict[str, Any]]]] = {}
        self.frames: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.ended: str | None = None  # why the stream ended, if it did before being closed

    async def run(self) -> None:
        try:
            await self._read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.ended = f"{type(exc).__name__}: {exc}"
            raise
        self.ended = "the server closed it"

    async def _read(self) -> None:
        timeout = httpx.Timeout(10.0, read=None)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "text/event-stream"}
        async with (
            httpx.AsyncClient(base_url=self._base_url, timeout=timeout, trust_env=False) as client,
            client.stream("GET", "/api/v1/events", headers=headers) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"event stream answered {response.status_code}")
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    self.frames[kind] += 1
                    if kind == "alert":
                        self._alert(line[5:])
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith(":"):
                    self.connected.set()
                elif not line:
                    kind = ""

    def _alert(self, data: str) -> None:
        arrived, wall = time.perf_counter(), time.time()
        doc = orjson.loads(data)
        future = self.waiting.get(doc.get("patient_id") or "")
        alert = doc.get("data") or {}
        if future is not None and not future.done() and alert.get("rule") == GLUCOSE_RULE:
            future.set_result((arrived, wall, alert))


@asynccontextmanager
async def event_stream(server: Server, token: str) -> AsyncIterator[AlertStream]:
    stream = AlertStream(server.base_url, token)
    task = asyncio.create_task(stream.run())
    try:
        waiter = asyncio.create_task(stream.connected.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if task in done:
            task.result()  # raises what ended it
            raise RuntimeError("the event stream ended at once")
        if not done:
            raise RuntimeError("the event stream did not connect within 10 s")
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


# --- probes -----------------------------------------------------------------------------------


class ProbePublisher:
    """One MQTT 5 connection publishing every probe device's reading (the broker is
    anonymous; each reading goes to its own device's topic)."""

    def __init__(self, port: int) -> None:
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-probe-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5,
        )
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        deadline = time.monotonic() + 10
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the probe publisher did not connect to the broker")
            time.sleep(0.02)

    def publish(self, probe: Probe, tag: str) -> None:
        moment = datetime.now(UTC) - timedelta(seconds=1)
        reading = {
            "id": f"probe-{tag}",
            "type": "blood-glucose",
            "time": stamp(moment),
            "value": CRITICAL_GLUCOSE,
            "unit": "mg/dL",
        }
        body = orjson.dumps({"readings": [reading]})
        self._client.publish(TOPIC.format(probe.device_id), body, qos=1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            self._client.loop_stop()


async def run_probe(
    stream: AlertStream, publisher: ProbePublisher, probe: Probe, tag: str, within: float
) -> Sample:
    """Publish one critical reading; wait for its alert on the stream."""
    future: asyncio.Future[tuple[float, float, dict[str, Any]]] = (
        asyncio.get_running_loop().create_future()
    )
    stream.waiting[probe.patient_id] = future
    wall = time.time()
    began = time.perf_counter()
    publisher.publish(probe, tag)
    try:
        arrived, arrived_wall, alert = await asyncio.wait_for(future, within)
    except TimeoutError:
        return Sample(probe, wall, None)
    finally:
        stream.waiting.pop(probe.patient_id, None)
    return Sample(probe, wall, arrived - began, arrived_wall, alert)


async def run_probes(
    stream: AlertStream,
    publisher: ProbePublisher,
    probes: Sequence[Probe],
    tag: str,
    spacing: float,
    within: float,
) -> list[Sample]:
    """One probe every `spacing` seconds on a fixed schedule, each awaited on its own."""
    tasks: list[asyncio.Task[Sample]] = []
    began = time.monotonic()
    for n, probe in enumerate(probes):
        await asyncio.sleep(max(0.0, began + n * spacing - time.monotonic()))
        tasks.append(asyncio.create_task(run_probe(stream, publisher, probe, f"{tag}-{n}", within)))
    return list(await asyncio.gather(*tasks))


# --- the background load (a child process: its CPU is not this process's) ---------------------


def background_body(tag: str, start: datetime, number: int, batch: int) -> bytes:
    """Message `number` of a device: `batch` readings, heart rate and SpO2 alternately, one
    pair a minute from `start`; normal values, so no rule raises anything."""
    readings = []
    for j in range(batch):
        k = number * batch + j
        moment = stamp(start + timedelta(minutes=k // 2))
        if k % 2 == 0:
            reading = {"type": "heart-rate", "value": 60 + (k * 7) % 40, "unit": "/min"}
        else:
            reading = {"type": "oxygen-saturation", "value": 95 + k % 5, "unit": "%"}
        readings.append({"id": f"{tag}-{k}", "time": moment, **reading})
    return orjson.dumps({"readings": readings})


def load_child(spec: dict[str, Any]) -> None:
    """Entry point of the load process. Connects one client per device, prints `ready`, waits
    for `go` on stdin, publishes at the rate until `stop` (or end of input, or `max_seconds`),
    then prints what it published as JSON."""
    devices: list[str] = spec["devices"]
    rate, batch, tag = float(spec["rate"]), int(spec["batch"]), str(spec["tag"])
    start = datetime.fromisoformat(spec["start"])
    acked = [0]
    lock = threading.Lock()

    def on_publish(*_: object) -> None:
        with lock:
            acked[0] += 1

    clients = []
    for _ in devices:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-load-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5,
        )
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect("127.0.0.1", int(spec["port"]))
        client.loop_start()
        clients.append(client)
    deadline = time.monotonic() + 10
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            raise SystemExit("load: the devices did not connect")
        time.sleep(0.02)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    stopping = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.readline()  # "stop", or end of input when the parent went away
        stopping.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    interval = batch / rate
    sent = [0] * len(devices)
    began = time.monotonic()
    end = began + float(spec["max_seconds"])
    lag = 0.0
    messages = 0
    while not stopping.is_set():
        due = began + messages * interval
        now = time.monotonic()
        if due >= end:
            break
        if due > now:
            stopping.wait(due - now)
            continue
        lag = max(lag, now - due)
        d = messages % len(devices)
        body = background_body(tag, start, sent[d], batch)
        clients[d].publish(TOPIC.format(devices[d]), body, qos=1)
        sent[d] += 1
        messages += 1
    seconds = time.monotonic() - began
    wait_until = time.monotonic() + 5
    while time.monotonic() < wait_until:
        with lock:
            if acked[0] >= messages:
                break
        time.sleep(0.02)
    for client in clients:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop_stop()
    with lock:
        done = acked[0]
    result = {"messages": messages, "acked": done, "seconds": seconds, "max_lag": lag}
    print(orjson.dumps(result).decode(), flush=True)


class BackgroundLoad:
    """The load child process, driven over its stdin."""

    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        self._log_path = log_path
        with log_path.open("ab") as err:
            self.process = subprocess.Popen(
                [
                    venv_python(),
                    str(Path(__file__).resolve()),
                    "--load-child",
                    orjson.dumps(spec).decode(),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.result: dict[str, Any] | None = None
        self._stopped = False

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the load generator did not start:\n{tail(self._log_path)}")

    def _say(self, word: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(word.encode() + b"\n")
            self.process.stdin.flush()

    def go(self) -> None:
        self._say("go")

    def stop(self) -> None:
        """Ask it to stop, read its result, make sure it has exited (once)."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
            # Writes "stop" (a child already gone is fine), closes stdin, reads the result.
            out, _ = self.process.communicate(input=b"stop\n", timeout=15)
            lines = out.decode(errors="replace").strip().splitlines()
            if lines and lines[-1].startswith("{"):
                self.result = orjson.loads(lines[-1])
        stop_process(self.process, timeout=5)

    def readings_per_second(self, batch: int) -> float:
        if not self.result or self.result["seconds"] <= 0:
            return 0.0
        return float(self.result["acked"] * batch / self.result["seconds"])


# --- provisioning and measuring ----------------------------------------------------------------


async def provision(url: str, devices: int, probes: int) -> Provisioned:
    """Migrate; create the background devices and the probe devices, each with its own
    patient, assigned from 2020; issue a clinician token for the event stream."""
    db = Database(url)
    try:
        await migrate.upgrade(db)

        async def patient_with_device(label: str) -> Probe:
            patient = await provisioning.create_patient(
                db, family="Bench", given=label, identifier=f"BENCH-{label}"
            )
            credential = await provisioning.register_device(db, display_name=f"bench {label}")
            await provisioning.assign_device(db, credential.device_id, patient.id, ASSIGNED_FROM)
            return Probe(patient.id, credential.device_id)

        background = [(await patient_with_device(f"bg-{k}")).device_id for k in range(devices)]
        found = [await patient_with_device(f"probe-{k}") for k in range(probes)]
        token = await provisioning.issue_service_token(
            db, name="bench-dashboard", scopes="system/*.rs"
        )
    finally:
        await db.dispose()
    return Provisioned(background, found, token)


async def count(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(observations))).scalar_one()
        )


async def probe_rows(
    db: Database, probes: Sequence[Probe]
) -> tuple[dict[str, datetime], list[int]]:
    """The probes' received_at by device, and the size of the micro-batch each was stored in
    (the readings sharing its received_at: one `ingest_many` stamps them all)."""
    devices = [p.device_id for p in probes]
    async with db.read() as conn:
        rows = await conn.execute(
            select(observations.c.device_id, observations.c.received_at).where(
                observations.c.device_id.in_(devices)
            )
        )
        received = {str(d): r for d, r in rows}
        if not received:
            return received, []
        sizes = await conn.execute(
            select(observations.c.received_at, func.count())
            .where(observations.c.received_at.in_(list(set(received.values()))))
            .group_by(observations.c.received_at)
        )
        by_time = {t: int(n) for t, n in sizes}
    return received, [by_time.get(t, 0) for t in received.values()]


def postgres_cpu() -> float | None:
    """CPU seconds so far of every process named `postgres` (Linux /proc; None elsewhere)."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text.split(" (", 1)[1].rsplit(")", 1)
        if name == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else None


def machine_cpu() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_mark(server: Server, broker: Broker, load: BackgroundLoad | None) -> Cpu:
    return Cpu(
        process_cpu(server.process.pid),
        process_cpu(broker.pid),
        None if load is None else process_cpu(load.process.pid),
        time.process_time(),
        postgres_cpu(),
        machine_cpu(),
    )


def cpu_since(mark: Cpu, now: Cpu) -> Cpu:
    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return Cpu(
        delta(now.server, mark.server),
        delta(now.broker, mark.broker),
        delta(now.load, mark.load),
        now.bench - mark.bench,
        delta(now.postgres, mark.postgres),
        delta(now.machine, mark.machine),
    )


@dataclass(frozen=True, slots=True)
class Phase:
    index: int
    rate: float
    probes: list[Probe]  # WARMUP_PROBES uncounted ones first


async def run_phase(
    backend: str,
    url: str,
    db: Database,
    setup: Provisioned,
    phase: Phase,
    workdir: Path,
    opts: Options,
) -> Figure:
    """Fresh broker and server; the event stream; background load; the probes."""
    directory = workdir / f"phase-{phase.index}"
    directory.mkdir()
    broker = Broker(directory, MAX_QUEUED, MAX_INFLIGHT, STOP_TIMEOUT)
    load: BackgroundLoad | None = None
    publisher: ProbePublisher | None = None
    try:
        await asyncio.to_thread(broker.start)
        if phase.rate > 0:
            spec = {
                "port": broker.port,
                "devices": setup.background,
                "rate": phase.rate,
                "batch": opts.batch,
                "tag": f"bg{phase.index}",
                "start": (BACKGROUND_EPOCH + timedelta(days=200 * phase.index)).isoformat(),
                "max_seconds": opts.warmup
                + (len(phase.probes) + 4) * opts.spacing
                + 2 * opts.timeout
                + 30,
            }
            load = BackgroundLoad(spec, directory / "load.log")
        async with running_server(url, broker.port, directory) as server:
            if load is not None:
                await asyncio.to_thread(load.wait_ready)
            async with event_stream(server, setup.token) as stream:
                publisher = await asyncio.to_thread(ProbePublisher, broker.port)
                warm, counted = phase.probes[:WARMUP_PROBES], phase.probes[WARMUP_PROBES:]
                at_go = await count(db)
                started = time.monotonic()
                if load is not None:
                    load.go()
                warmed = await run_probes(
                    stream, publisher, warm, f"w{phase.index}", opts.spacing, opts.timeout
                )
                if any(s.latency is None for s in warmed):
                    log(f"[{backend}] note: a warm-up probe timed out")
                if load is not None:
                    await asyncio.sleep(max(0.0, started + opts.warmup - time.monotonic()))
                before = await count(db)
                mark = cpu_mark(server, broker, load)
                stream.frames.clear()
                began = time.perf_counter()
                out = None if opts.profile is None else opts.profile / f"phase-{phase.index}.txt"
                async with profiled(server.process.pid, out):
                    samples = await run_probes(
                        stream, publisher, counted, f"p{phase.index}", opts.spacing, opts.timeout
                    )
                window = time.perf_counter() - began
                cpu = cpu_since(mark, cpu_mark(server, broker, load))
                after = await count(db)
                since_go = time.monotonic() - started
                frames = Counter(stream.frames)
                if stream.ended is not None:
                    raise RuntimeError(f"the event stream ended during the phase ({stream.ended})")
            if load is not None:
                await asyncio.to_thread(load.stop)
            problems = server.problems()
    except Exception:
        if load is not None:
            log(f"load generator log (last lines):\n{tail(directory / 'load.log')}")
        raise
    finally:
        if publisher is not None:
            await asyncio.to_thread(publisher.close)
        if load is not None:
            await asyncio.to_thread(load.stop)
        await asyncio.to_thread(broker.stop)
    received, sizes = await probe_rows(db, counted)
    in_window = sum(1 for s in samples if s.probe.device_id in received)
    achieved = max(0, after - before - in_window) / window if window > 0 else 0.0
    published = 0.0 if load is None else load.readings_per_second(opts.batch)
    # Readings published since `go` but not committed by the window's end: queued at the
    # broker or in the batch in hand (probes are one reading each; they are left out).
    backlog = None
    if load is not None:
        committed = after - at_go - len(phase.probes)
        backlog = max(0, round(published * since_go - committed))
    if load is not None and load.result and load.result["max_lag"] > 1.0:
        log(
            f"[{backend}] note: the load generator fell {load.result['max_lag']:.1f} s behind "
            f"its schedule"
        )
    severities = Counter(str(s.alert.get("severity")) for s in samples if s.alert is not None)
    return Figure(
        backend,
        phase.rate,
        achieved,
        published,
        window,
        samples,
        received,
        sizes,
        cpu,
        frames,
        problems,
        severities,
        backlog,
    )


def ms(seconds: float) -> str:
    return ">timeout" if math.isinf(seconds) else f"{seconds * 1000:.0f}"


def summary_line(f: Figure) -> str:
    values = [s.latency if s.latency is not None else math.inf for s in f.samples]
    parts = [ms(nearest_rank(values, p)) for p in (50, 95, 99, 100)] if values else ["-"] * 4
    return (
        f"p50 {parts[0]} ms, p95 {parts[1]} ms, p99 {parts[2]} ms, max {parts[3]} ms, "
        f"{f.timeouts} timeout(s) of {len(f.samples)}"
    )


async def bench_backend(
    backend: str, url: str, workdir: Path, opts: Options, report: Report
) -> None:
    """Provision once, then every phase (baseline first) on the same database."""
    per_phase = opts.samples + WARMUP_PROBES
    probes_needed = per_phase * (len(opts.phases) + (1 if opts.sustained else 0))
    log(
        f"[{backend}] provisioning {opts.devices} background devices and {probes_needed} probe "
        f"devices (one patient each)"
    )
    began = time.perf_counter()
    setup = await provision(url, opts.devices, probes_needed)
    log(f"[{backend}] provisioned in {time.perf_counter() - began:.1f} s")
    db = Database(url)
    rates = list(opts.phases)
    try:
        for index in range(len(rates) + (1 if opts.sustained else 0)):
            if index == len(rates):  # the sustained phase: 80 % of the best committed rate
                best = max((f.achieved for f in report.figures if f.backend == backend), default=0)
                if best <= 0:
                    log(f"[{backend}] no loaded phase committed anything: no sustained phase")
                    break
                rates.append(round(0.8 * best))
                log(
                    f"[{backend}] sustained phase: offering {rates[-1]:,}/s (80 % of {best:,.0f}/s)"
                )
            rate = rates[index]
            probes = setup.probes[index * per_phase : (index + 1) * per_phase]
            phase = Phase(index, rate, probes)
            figure = await run_phase(backend, url, db, setup, phase, workdir, opts)
            report.figures.append(figure)
            load_text = (
                "no background load"
                if rate == 0
                else f"background target {rate:,.0f}/s, committed {figure.achieved:,.0f}/s, "
                f"published {figure.published:,.0f}/s, ~{figure.backlog or 0:,} readings "
                f"published but not yet committed at the end"
            )
            log(f"[{backend}] {load_text}: {summary_line(figure)}")
    finally:
        await db.dispose()


# --- output -----------------------------------------------------------------------------------


async def print_run(opts: Options) -> None:
    """The machine, and what this run does."""
    await print_machine(
        postgres_url=opts.postgres_url if "postgresql" in opts.backends else None,
        broker=True,
        python=f"; paho-mqtt {importlib.metadata.version('paho-mqtt')}, "
        f"httpx {importlib.metadata.version('httpx')}",
    )
    rates = ", ".join(f"{r:,.0f}" for r in opts.rates)
    log(
        f"run:        per phase {opts.samples} probes {opts.spacing:g} s apart (+{WARMUP_PROBES} "
        f"uncounted), timeout {opts.timeout:g} s each; background 0 (baseline), {rates} "
        f"readings/s over {opts.devices} devices, {opts.batch} readings/message, QoS 1, "
        f"{opts.warmup:g} s warm-up; broker max_queued_messages {MAX_QUEUED}, "
        f"max_inflight_messages {MAX_INFLIGHT}; event bus: in-process (serve's default)"
    )
    log("")


def median_ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"


def segments(f: Figure) -> tuple[list[float], list[float], list[float]]:
    """Per arrived sample: publish -> received_at, received_at -> opened_at, opened_at ->
    arrival on the stream (seconds, wall clock)."""
    queued: list[float] = []
    stored: list[float] = []
    delivered: list[float] = []
    for s in f.samples:
        received = f.received.get(s.probe.device_id)
        if s.alert is None or s.arrived_wall is None or received is None:
            continue
        opened = parse_instant(s.alert["opened_at"]).timestamp()
        queued.append(received.timestamp() - s.published_wall)
        stored.append(opened - received.timestamp())
        delivered.append(s.arrived_wall - opened)
    return queued, stored, delivered


def print_tables(report: Report) -> None:
    log("")
    log(
        f"{'backend':<11}{'target bg readings/s':>21}{'achieved':>10}{'samples':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'timeouts':>10}"
    )
    for f in report.figures:
        values = [s.latency if s.latency is not None else math.inf for s in f.samples]
        cells = [ms(nearest_rank(values, p)) for p in (50, 95, 99, 100)] if values else ["-"] * 4
        target = "0 (baseline)" if f.target == 0 else f"{f.target:,.0f}"
        achieved = "-" if f.target == 0 else f"{f.achieved:,.0f}"
        short = " (short)" if f.target > 0 and f.achieved < 0.95 * f.target else ""
        log(
            f"{f.backend:<11}{target:>21}{achieved:>10}{len(f.samples):>9}"
            f"{cells[0]:>9}{cells[1]:>9}{cells[2]:>9}{cells[3]:>9}{f.timeouts:>10}{short}"
        )
    log(
        "achieved: background readings committed per second over the probe window (COUNT(*) "
        "of observations); (short): under 95 % of the target. Percentiles nearest-rank over "
        "every sample, a timeout counting as infinite (shown as >timeout)."
    )
    for f in report.figures:
        if f.target > 0 and f.achieved < 0.95 * f.target:
            log(
                f"NOT SUSTAINED: {f.backend} committed {f.achieved:,.0f} of the "
                f"{f.target:,.0f} background readings/s asked for "
                f"({f.achieved / f.target:.0%}; the generator published {f.published:,.0f}/s); "
                f"the rest queued at the broker (~{f.backlog or 0:,} readings at the end) and "
                f"the probes queued behind it, so their latency measures the backlog."
            )
    log("")
    log("where the time goes (medians over the samples that arrived), and the load:")
    log(
        f"{'backend':<11}{'target':>8}{'published':>11}{'pub->recv':>11}{'recv->open':>12}"
        f"{'open->sse':>11}{'batch rdgs':>12}{'sse frames/s':>14}"
        f"  {'cpu % srv/brk/load/bench/pg':<29}{'machine':>9}{'log warn':>9}"
    )
    for f in report.figures:
        queued, stored, delivered = segments(f)
        batch = f"{statistics.median(f.batch_sizes):.0f}" if f.batch_sizes else "-"
        published = "-" if f.target == 0 else f"{f.published:,.0f}"
        frames = sum(f.frames.values()) / f.window if f.window > 0 else 0.0
        log(
            f"{f.backend:<11}{f.target:>8,.0f}{published:>11}{median_ms(queued):>11}"
            f"{median_ms(stored):>12}{median_ms(delivered):>11}{batch:>12}{frames:>14,.0f}"
            f"  {f.cpu.shares(f.window):<29}{f.cpu.machine_share(f.window):>9}"
            f"{f.log_problems:>9}"
        )
    log(
        "published: background readings/s PUBACKed by the broker. pub->recv: publish to the "
        "server starting to store the probe's micro-batch (broker, and waiting behind the "
        "batch in hand); recv->open: that batch's commit, its readings events and the rules "
        "up to the probe patient's alert; open->sse: the rest of the rules' transaction, the "
        "commit, the event bus and SSE (ms). batch rdgs: readings in the probe's micro-batch "
        "(median). cpu: % of one core over the probe window; pg: every postgres process on the "
        "machine; machine: busy CPU of the whole machine, all processes (other work "
        "included) / its capacity. log warn: WARNING/ERROR lines in the server log."
    )
    for f in report.figures:
        wrong = {k: v for k, v in f.severities.items() if k != "critical"}
        if wrong:
            log(f"note: {f.backend} at {f.target:,.0f}/s: alerts with severity {wrong}")
    for f in report.figures:
        if f.target > 0 and f.achieved >= 0.95 * f.target:
            log(
                f"SUSTAINED: {f.backend} offered {f.target:,.0f}/s, committed {f.achieved:,.0f}/s: "
                f"alert {summary_line(f)}"
            )
    if not any(f.target > 0 and f.achieved >= 0.95 * f.target for f in report.figures):
        log("no loaded phase was sustained: no alert latency under a sustained load to report")
    for reason in report.skipped:
        log(f"skipped: {reason}")
    log(f"load at the end: {load_average()}")


# --- entry point ------------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_options(parser)
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="background readings/s of a loaded phase (repeatable; default 1000 and 10000); "
        "a no-load baseline always runs first",
    )
    parser.add_argument("--samples", type=int, default=60, help="probes per phase (default 60)")
    parser.add_argument(
        "--spacing", type=float, default=0.2, help="seconds between probes (default 0.2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of load before probing (default 3)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds a probe's alert may take (10)"
    )
    parser.add_argument("--devices", type=int, default=20, help="background devices (20)")
    parser.add_argument("--batch", type=int, default=50, help="readings per message (50)")
    parser.add_argument(
        "--sustained",
        action="store_true",
        help="one more phase offered 80%% of the best committed rate: the latency under a "
        "load actually sustained",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="a folder: py-spy records the server during each phase's probe window "
        "(collapsed stacks, phase-N.txt)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rates = tuple(args.rate or ((500.0,) if args.quick else (1000.0, 10000.0)))
    samples, warmup = args.samples, args.warmup
    if args.quick:
        samples, warmup = min(samples, 5), min(warmup, 1.0)
    if min(samples, args.devices, args.batch) < 1 or min(rates) <= 0:
        parser.error("counts and rates must be positive")
    if args.spacing <= 0 or args.timeout <= 0 or warmup < 0:
        parser.error("--spacing and --timeout must be positive, --warmup not negative")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    return Options(
        tuple(args.backend or ("sqlite", "postgresql")),
        args.postgres_url,
        rates,
        samples,
        args.spacing,
        warmup,
        args.timeout,
        args.devices,
        args.batch,
        sustained=args.sustained,
        profile=args.profile,
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
    print_tables(report)
    log(f"total: {time.perf_counter() - started:.0f} s")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load-child":
        load_child(orjson.loads(sys.argv[2]))
        sys.exit(0)
    try:
        asyncio.run(main(parse_options()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted; server, broker and load stopped, benchmark data removed")
