"""medmesh beside the machine's own limits, in one run on PostgreSQL.

Limits, measured in the same run on the same machine:

- raw COPY: asyncpg `copy_records_to_table` of rows shaped like medmesh's observations (same
  columns and indexes, a sealed-size value), `--batch` rows a transaction, one connection per
  sender;
- bare ASGI: a uvicorn child process whose only endpoint reads the body and answers 202, posted
  the same bodies by the same client: what HTTP alone costs on this machine;
- Mosquitto pub→sub: what a private Mosquitto carries from the devices (`mosquitto_pub`, one a
  device) to one paho-mqtt subscriber, QoS 1, the client library of medmesh's worker.

The client is `_light_http.py` (one keep-alive connection a sender, requests written as bytes)
unless `--client httpx`: httpx costs more CPU a request than the server's own handling of a
single reading, and on two cores it, not the server, set the single-reading rates.

medmesh (`python -m medmesh serve`, a child process) on the same work: senders post
`--batch`-reading bodies (heart rate, one a second per device), and single readings. Each
figure is printed with its ratio to its limit. "Judged" rates count until the alert rules have
run on every batch (no `pending_evaluations` left), not only until the 202s.

Single readings come from `--single-senders` devices (64), each waiting for its 202 before it
sends again, into one server process and then into two (`serve --workers 2`). A sender that
waits is a closed loop: with few of them the rate measures the wait of one request (the group
commit's window and the commit), not what the server can take. They are also counted a server
CPU-second (readings over the server process's user + system CPU, judging included), beside
the bare ASGI endpoint's requests a CPU-second of its own process.

CPU a reading: for raw COPY and for the 100-reading phases (no history; two processes), the
CPU seconds the server (its workers included), the whole local PostgreSQL cluster and this
client spent, over the readings (rows) of the phase, and the rate the machine's cores would
reach if all three were busy all the time (the cores over their sum; 2 on our machine). It says
where a ratio's ceiling is: a phase whose CPU a reading is more than twice COPY's, with COPY
itself keeping the cores busy, cannot reach half of COPY's rate by waiting less.

MQTT: one `medmesh ingest-worker` takes messages of 1 and of 10 readings from the same
`mosquitto_pub` devices (benchmarks/mqtt_ingest.py), counted until committed.

History: half the senders' patients first get `--history-days` of one-a-minute heart rate (30
days by default), the other half none, and both halves are measured the same way, so a cost
that grows with history shows as a gap between the two rates.

Run: `.venv/bin/python benchmarks/side_by_side.py` (`--help`; `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

import mqtt_ingest
from _common import (
    DEFAULT_POSTGRES_URL,
    Broker,
    PostgresUnreachable,
    child_pids,
    free_port,
    load_average,
    log,
    postgres_cpu,
    print_machine,
    process_cpu,
    process_tree_cpu,
    profiled,
    scratch_postgres,
    venv_python,
)
from _light_http import LightHttp
from ingest_and_search import Sender, cpu_mark, cpu_since, running_server, server_env
from medmesh import provisioning
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.ingest.paho_properties import share_property_tables
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import Observations

ASSIGNED_FROM = datetime(2020, 1, 1, tzinfo=UTC)
LIVE_FROM = datetime(2026, 6, 1, tzinfo=UTC)  # where the measured readings start
SEALED_VALUE_BYTES = 37  # version, nonce, float, tag: what a sealed float takes
RSS_MINUTES = 20  # of one-a-minute heart rate and SpO2 per patient for the memory figure

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"14")]})
    await send({"type": "http.response.body", "body": b'{"accepted":1}'})
"""


@dataclass(frozen=True, slots=True)
class Options:
    postgres_url: str
    senders: int
    batch: int
    requests: int  # per sender, batches of `batch`
    single_requests: int  # per sender, batches of 1
    copy_rows: int
    history_days: int
    group_commit_ms: float
    profile: Path | None = None  # py-spy collapsed stacks of the server, one file a phase
    client: str = "light"  # the HTTP load generator: "light" (_light_http.py) or "httpx"
    single_senders: int = 64  # concurrent devices sending single readings
    mqtt_devices: int = 20
    mqtt_messages: int = 20_000  # single-reading messages; half as many 10-reading ones
    rss_patients: int = 10_000


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float  # per second
    limit: float | None
    limit_name: str = ""

    def line(self) -> str:
        if self.limit is None:
            return f"{self.name:<52} {self.value:>10,.0f}/s"
        ratio = self.value / self.limit * 100 if self.limit else 0.0
        return (
            f"{self.name:<52} {self.value:>10,.0f}/s  limit {self.limit:>10,.0f}/s "
            f"({self.limit_name})  ratio {ratio:.1f}%"
        )


# --- limits -------------------------------------------------------------------------------


async def copy_limit(url: str, opts: Options) -> float:
    """Rows/s of raw COPY into a table shaped like observations, `batch` rows a commit."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute("CREATE TABLE copy_target (LIKE observations INCLUDING ALL)")
    finally:
        await setup.close()
    per_sender = opts.copy_rows // opts.senders
    columns = [
        "id",
        "patient_id",
        "device_id",
        "message_id",
        "code",
        "effective",
        "value",
        "unit",
        "received_at",
    ]

    async def one(k: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            now = datetime.now(UTC)
            for start in range(0, per_sender, opts.batch):
                rows = [
                    (
                        f"{k:04d}-{n:08d}-copy-0000-000000000000",
                        "patient-copy",
                        f"device-{k}",
                        f"m-{n}",
                        "8867-4",
                        LIVE_FROM + timedelta(seconds=n),
                        os.urandom(SEALED_VALUE_BYTES),
                        "/min",
                        now,
                    )
                    for n in range(start, min(start + opts.batch, per_sender))
                ]
                async with conn.transaction():
                    await conn.copy_records_to_table("copy_target", records=rows, columns=columns)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(opts.senders)))
    return per_sender * opts.senders / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds so far of the server (and its workers), PostgreSQL and this process."""

    server: float | None
    postgres: float | None
    client: float

    @classmethod
    def now(cls, server_pid: int | None) -> CpuMark:
        return cls(process_tree_cpu(server_pid), postgres_cpu(), time.process_time())


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """What a phase's readings (or rows) cost in CPU, by process: the rate the machine's cores
    could reach if every process were busy all the time is their count over the sum."""

    phase: str
    items: int
    server: float | None  # seconds; None: no server (COPY) or no /proc
    postgres: float | None
    client: float

    @classmethod
    def since(cls, phase: str, items: int, mark: CpuMark, server_pid: int | None) -> CpuBudget:
        now = CpuMark.now(server_pid)

        def used(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        return cls(
            phase,
            items,
            used(now.server, mark.server),
            used(now.postgres, mark.postgres),
            now.client - mark.client,
        )

    def line(self) -> str:
        parts = [
            ("server", self.server),
            ("PostgreSQL", self.postgres),
            ("client", self.client),
        ]
        known = [(name, s) for name, s in parts if s is not None]
        total = sum(s for _, s in known)
        each = ", ".join(f"{name} {s / self.items * 1e6:.1f} µs" for name, s in known)
        cores = os.cpu_count() or 1
        ceiling = self.items / total * cores if total else float("nan")
        return (
            f"CPU a reading, {self.phase}: {each}; {total / self.items * 1e6:.1f} µs in all, "
            f"so at most {ceiling:,.0f}/s on {cores} busy cores"
        )


@dataclass(frozen=True, slots=True)
class BareLimit:
    per_second: float  # readings
    per_cpu_second: float | None  # readings a CPU-second of the endpoint's process


async def bare_asgi_limit(
    workdir: Path, opts: Options, size: int, requests: int, concurrent: int
) -> BareLimit:
    """Readings/s a bare ASGI endpoint answering 202 takes, same bodies, same client."""
    (workdir / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        venv_python(),
        "-m",
        "uvicorn",
        "bare_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        cwd=workdir,
        env=server_env("sqlite:///unused.db"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    await client.get("/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            senders = [Sender("bare", "x", LIVE_FROM) for _ in range(concurrent)]

            async def loop(sender: Sender) -> None:
                async with connection(base, opts.client) as post:
                    for _ in range(requests):
                        status, _ = await post(
                            "/ingest/v1/readings",
                            sender.next_batch(size),
                            {"Authorization": "Bearer x"},
                        )
                        assert status == 202

            cpu = process_cpu(process.pid)
            started = time.perf_counter()
            await asyncio.gather(*(loop(s) for s in senders))
            readings = requests * size * len(senders)
            elapsed = time.perf_counter() - started
            used = process_cpu(process.pid)
            return BareLimit(
                readings / elapsed,
                None if cpu is None or used is None or used <= cpu else readings / (used - cpu),
            )
    finally:
        process.terminate()
        await process.wait()


def mosquitto_limit(workdir: Path, devices: int, messages: int, body: bytes) -> float:
    """Messages/s Mosquitto itself carries from the devices to one subscriber, QoS 1 both
    ways: the MQTT limit. The subscriber is paho-mqtt as in medmesh's worker (its Properties
    tables shared as there), alone in this process; the devices are `mosquitto_pub`, as in
    medmesh's MQTT phases."""
    share_property_tables()
    directory = workdir / "mosquitto-limit"
    directory.mkdir()
    broker = Broker(directory, max_queued=1_000_000)
    broker.start()
    received = 0
    done = threading.Event()
    total = messages * devices

    def on_message(_client: Any, _userdata: Any, _message: Any) -> None:
        nonlocal received
        received += 1
        if received >= total:
            done.set()

    subscriber = paho.Client(CallbackAPIVersion.VERSION2, client_id="sbs-sub", protocol=paho.MQTTv5)
    subscriber.on_message = on_message
    try:
        subscriber.connect("127.0.0.1", broker.port)
        subscriber.subscribe(mqtt_ingest.TOPIC.format("+"), qos=1)
        subscriber.loop_start()
        time.sleep(0.5)
        names = [f"d{k}" for k in range(devices)]
        started = time.perf_counter()
        mqtt_ingest.publish_with_mosquitto_pub(
            broker.port, names, [[body] * messages for _ in names], directory
        )
        if not done.wait(120):
            raise RuntimeError(f"mosquitto limit: {received} of {total} received")
        return total / (time.perf_counter() - started)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()


async def medmesh_mqtt(url: str, workdir: Path, opts: Options) -> list[mqtt_ingest.Figure]:
    """medmesh's MQTT ingest (one `medmesh ingest-worker`, private broker, a `mosquitto_pub`
    a device as in benchmarks/mqtt_ingest.py): single-reading and 10-reading messages,
    committed."""
    mopts = mqtt_ingest.Options(
        backends=("postgresql",),
        postgres_url=opts.postgres_url,
        devices=opts.mqtt_devices,
        publishers=2,
        workers=(1,),
        shapes=((1, opts.mqtt_messages), (10, opts.mqtt_messages // 2)),
        timeout=300,
        max_queued=1_000_000,
    )
    devices = await mqtt_ingest.provision(url, mopts.devices)
    db = Database(url)
    figures = []
    try:
        directory = workdir / "mqtt"
        directory.mkdir()
        for index, (per_message, messages) in enumerate(mopts.shapes):
            phase = mqtt_ingest.Phase(index, 1, per_message, messages)
            figures.append(
                await mqtt_ingest.run_phase("postgresql", url, db, devices, phase, directory, mopts)
            )
    finally:
        await db.dispose()
    return figures


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), MiB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    for kid in child_pids(pid):
        total += int(rss_mib(kid) * 1024)
    return total / 1024


async def rule_state_rss(url: str, workdir: Path, patients: int) -> tuple[float, float]:
    """Server RSS (MiB) before and after judging one batch of `RSS_MINUTES` of one-a-minute
    readings (heart rate, SpO2) for each of `patients` patients: the rule states it caches."""
    db = Database(url)
    senders = []
    try:
        numbers = list(range(patients))

        async def provision_some() -> None:
            while numbers:
                k = numbers.pop()
                patient = await provisioning.create_patient(
                    db, family="Bench", given="Rss", identifier=f"RSS-{k}"
                )
                cred = await provisioning.register_device(db, display_name=f"rss {k}")
                await provisioning.assign_device(db, cred.device_id, patient.id, ASSIGNED_FROM)
                senders.append((cred.device_id, cred.secret))

        await asyncio.gather(*(provision_some() for _ in range(8)))
    finally:
        await db.dispose()
    log(f"provisioned {patients} patients for the memory figure")
    async with (
        running_server(url, workdir, {"MEDMESH_RATE_LIMIT_ENABLED": "false"}) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=120) as client,
    ):
        before = rss_mib(server.pid)
        queue = list(senders)

        async def one() -> None:
            while queue:
                _device, secret = queue.pop()
                readings = []
                for m in range(RSS_MINUTES):
                    at = LIVE_FROM + timedelta(minutes=m)
                    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    readings.append(
                        {
                            "id": f"hr-{m}",
                            "type": "heart-rate",
                            "time": stamp,
                            "value": 70,
                            "unit": "/min",
                        }
                    )
                    readings.append(
                        {
                            "id": f"sp-{m}",
                            "type": "oxygen-saturation",
                            "time": stamp,
                            "value": 97,
                            "unit": "%",
                        }
                    )
                response = await client.post(
                    "/ingest/v1/readings",
                    json={"readings": readings},
                    headers={"Authorization": f"Bearer {secret}"},
                )
                if response.status_code != 202:
                    raise RuntimeError(f"ingest answered {response.status_code}")

        await asyncio.gather(*(one() for _ in range(8)))
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        while await pending(dsn):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return before, rss_mib(server.pid)


# --- profiling ----------------------------------------------------------------------------


# --- medmesh ------------------------------------------------------------------------------


async def provision(url: str, opts: Options) -> tuple[list[Sender], list[Sender], list[Sender]]:
    """Senders whose patients have no history, senders whose patients have `history_days`,
    and senders for single readings (own patients, no history)."""
    db = Database(url)
    try:
        await migrate.upgrade(db)
        groups: list[list[Sender]] = [[], [], []]
        # Each sender's readings start at a time of their own, all in the past: a reading
        # ahead of the server's clock is refused (docs/readings.md), and refusals are not
        # what is measured (`measure` checks every reading was stored).
        spread = datetime.now(UTC) - timedelta(days=2) - LIVE_FROM
        counts = (opts.senders, opts.senders, opts.single_senders)
        for group, senders in enumerate(groups):
            step = min(timedelta(days=40), spread / max(counts[group], 1))
            for k in range(counts[group]):
                patient = await provisioning.create_patient(
                    db, family="Bench", given="Side", identifier=f"SBS-{group}-{k}"
                )
                cred = await provisioning.register_device(
                    db, display_name=f"side by side {group}/{k}"
                )
                await provisioning.assign_device(db, cred.device_id, patient.id, ASSIGNED_FROM)
                start = LIVE_FROM + step * k
                senders.append(Sender(cred.device_id, cred.secret, start))
                if group == 1 and opts.history_days:
                    await store_history(db, cred.device_id, patient.id, start, opts.history_days)
        return groups[0], groups[1], groups[2]
    finally:
        await db.dispose()


async def provision_senders(url: str, tag: str, count: int) -> list[Sender]:
    """`count` devices with a patient each, no history."""
    db = Database(url)
    try:
        senders = []
        for k in range(count):
            patient = await provisioning.create_patient(
                db, family="Bench", given="Side", identifier=f"SBS-{tag}-{k}"
            )
            cred = await provisioning.register_device(db, display_name=f"side by side {tag}/{k}")
            await provisioning.assign_device(db, cred.device_id, patient.id, ASSIGNED_FROM)
            senders.append(Sender(cred.device_id, cred.secret, LIVE_FROM))
        return senders
    finally:
        await db.dispose()


async def store_history(
    db: Database, device_id: str, patient_id: str, before: datetime, days: int
) -> None:
    """One heart rate a minute for `days` before `before`, through the repository (sealed)."""
    measure = measure_by_key("heart-rate")
    assert measure is not None
    minutes = days * 1440
    chunk = 5000
    for first in range(0, minutes, chunk):
        readings = [
            Reading(
                device_id,
                f"history-{m}",
                patient_id,
                measure,
                before - timedelta(minutes=minutes - m),
                (MeasuredValue(measure.code, 60.0 + m % 30, "/min"),),
            )
            for m in range(first, min(first + chunk, minutes))
        ]
        async with db.write() as conn:
            await Observations(conn).add_batch(readings, datetime.now(UTC))


async def pending(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pending_evaluations"))
    finally:
        await conn.close()


async def vacuumed(dsn: str) -> str:
    """VACUUM ANALYZE the run's database, as autovacuum would have during the phases before
    (rows of pending evaluations, rule state and device status are rewritten every batch);
    returns the server's autovacuum setting, for the log."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        return str(await conn.fetchval("SHOW autovacuum"))
    finally:
        await conn.close()


# POST a JSON body to a path with headers; the answer's status and its JSON.
Post = Callable[[str, Any, dict[str, str]], Awaitable[tuple[int, Any]]]


@asynccontextmanager
async def connection(base_url: str, client: str) -> AsyncIterator[Post]:
    """A sender's own connection to the server, through the chosen load generator."""
    if client == "light":
        host, _, port = base_url.removeprefix("http://").partition(":")
        async with LightHttp(host, int(port)) as light:

            async def post_light(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
                answer = await light.post_json(path, body, headers)
                return answer.status, answer.json()

            yield post_light
        return
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def post_httpx(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            response = await http.post(path, json=body, headers=headers)
            return response.status_code, response.json()

        yield post_httpx


async def measure(
    base_url: str,
    client: str,
    dsn: str,
    senders: Sequence[Sender],
    size: int,
    requests: int,
) -> tuple[float, float]:
    """(readings/s until the last 202, readings/s until the rules ran on every batch)."""

    async def loop(sender: Sender) -> None:
        async with connection(base_url, client) as post:
            for _ in range(requests):
                body = sender.next_batch(size)
                status, answer = await post(
                    "/ingest/v1/readings", body, {"Authorization": f"Bearer {sender.secret}"}
                )
                if status != 202:
                    raise RuntimeError(f"ingest answered {status}")
                if answer["accepted"] != size:  # refused ones would be cheaper
                    raise RuntimeError(f"ingest stored {answer['accepted']} of {size}")

    started = time.perf_counter()
    await asyncio.gather(*(loop(s) for s in senders))
    acked = time.perf_counter() - started
    while await pending(dsn):  # noqa: ASYNC110  (another process's table: nothing to wait on)
        await asyncio.sleep(0.02)
    judged = time.perf_counter() - started
    readings = size * requests * len(senders)
    return readings / acked, readings / judged


async def run(opts: Options) -> tuple[list[Figure], list[CpuBudget]]:
    await print_machine(postgres_url=opts.postgres_url)
    figures: list[Figure] = []
    budgets: list[CpuBudget] = []
    async with scratch_postgres(opts.postgres_url) as url:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        with tempfile.TemporaryDirectory(prefix="medmesh-sbs-") as tmp:
            workdir = Path(tmp)
            started = time.perf_counter()
            fresh, aged, single = await provision(url, opts)
            log(
                f"provisioned {2 * opts.senders + opts.single_senders} patients, "
                f"{opts.history_days} days of history "
                f"for {opts.senders} ({time.perf_counter() - started:.0f} s)"
            )
            mark = CpuMark.now(None)
            copy = await copy_limit(url, opts)
            log(f"limit: raw COPY {copy:,.0f} rows/s")
            rows = opts.copy_rows // opts.senders * opts.senders
            budgets.append(CpuBudget.since("raw COPY, a row", rows, mark, None))
            log(budgets[-1].line())
            bare_batch = await bare_asgi_limit(
                workdir, opts, opts.batch, opts.requests, opts.senders
            )
            bare_single = await bare_asgi_limit(
                workdir, opts, 1, opts.single_requests, opts.single_senders
            )
            log(
                f"limit: bare ASGI {bare_batch.per_second:,.0f} readings/s ({opts.batch} a request)"
            )
            log(f"limit: bare ASGI {bare_single.per_second:,.0f} readings/s (1 a request)")
            async with running_server(
                url, workdir, {"MEDMESH_GROUP_COMMIT_MS": str(opts.group_commit_ms)}
            ) as server:
                base, client = server.base_url, opts.client
                await measure(base, client, dsn, single, 1, 5)  # warm up
                mark = cpu_mark(server)
                budget_mark = CpuMark.now(server.pid)
                t0 = time.perf_counter()
                async with profiled(
                    server.pid, _profile_file(opts, "batch"), rate=200, subprocesses=True
                ):
                    acked0, judged0 = await measure(
                        base, client, dsn, fresh, opts.batch, opts.requests
                    )
                cpu0 = cpu_since(server, mark).shares(time.perf_counter() - t0)
                budgets.append(
                    CpuBudget.since(
                        f"HTTP {opts.batch}/request, no history, judged",
                        opts.batch * opts.requests * len(fresh),
                        budget_mark,
                        server.pid,
                    )
                )
                mark = cpu_mark(server)
                t0 = time.perf_counter()
                acked30, judged30 = await measure(
                    base, client, dsn, aged, opts.batch, opts.requests
                )
                cpu30 = cpu_since(server, mark).shares(time.perf_counter() - t0)
                mark = cpu_mark(server)
                async with profiled(
                    server.pid, _profile_file(opts, "single"), rate=200, subprocesses=True
                ):
                    acked1, judged1 = await measure(
                        base, client, dsn, single, 1, opts.single_requests
                    )
                cpu1 = cpu_since(server, mark).server
            b, d = opts.batch, opts.history_days
            figures += _logged(
                [
                    Figure(f"HTTP {b}/request, no history, acked", acked0, copy, "raw COPY"),
                    Figure(
                        f"HTTP {b}/request, no history, acked",
                        acked0,
                        bare_batch.per_second,
                        "bare ASGI",
                    ),
                    Figure(f"HTTP {b}/request, no history, judged", judged0, copy, "raw COPY"),
                    Figure(f"HTTP {b}/request, {d} d history, acked", acked30, copy, "raw COPY"),
                    Figure(f"HTTP {b}/request, {d} d history, judged", judged30, copy, "raw COPY"),
                    Figure(
                        f"HTTP {b}/request judged: {d} d history vs none", judged30, judged0, "none"
                    ),
                    Figure("HTTP 1/request, acked", acked1, bare_single.per_second, "bare ASGI"),
                    Figure("HTTP 1/request, judged", judged1, bare_single.per_second, "bare ASGI"),
                ]
            )
            if cpu1 and bare_single.per_cpu_second:
                figures += _logged(
                    [
                        Figure(
                            "HTTP 1/request, judged, a server CPU-second",
                            len(single) * opts.single_requests / cpu1,
                            bare_single.per_cpu_second,
                            "bare ASGI, a CPU-second",
                        )
                    ]
                )
            log(f"server/client CPU (% of one core): no history {cpu0}, {d} d history {cpu30}")
            log(budgets[-1].line())
            two = await provision_senders(url, "two", opts.single_senders)
            two_batch = await provision_senders(url, "two-batch", opts.senders)
            async with running_server(
                url,
                workdir,
                {"MEDMESH_GROUP_COMMIT_MS": str(opts.group_commit_ms)},
                args=("--workers", "2"),
            ) as server:
                base, client = server.base_url, opts.client
                await measure(base, client, dsn, two, 1, 5)  # warm up both processes
                async with profiled(
                    server.pid,
                    _profile_file(opts, "single-2-processes"),
                    rate=200,
                    subprocesses=True,
                ):
                    acked2, judged2 = await measure(base, client, dsn, two, 1, opts.single_requests)
                budget_mark = CpuMark.now(server.pid)
                _, batch2 = await measure(base, client, dsn, two_batch, opts.batch, opts.requests)
                budgets.append(
                    CpuBudget.since(
                        f"HTTP {opts.batch}/request, 2 processes, judged",
                        opts.batch * opts.requests * len(two_batch),
                        budget_mark,
                        server.pid,
                    )
                )
            figures += _logged(
                [
                    Figure(
                        f"HTTP {opts.batch}/request, 2 processes, judged", batch2, copy, "raw COPY"
                    ),
                    Figure(
                        "HTTP 1/request, 2 processes, acked",
                        acked2,
                        bare_single.per_second,
                        "bare ASGI",
                    ),
                    Figure(
                        "HTTP 1/request, 2 processes, judged",
                        judged2,
                        bare_single.per_second,
                        "bare ASGI",
                    ),
                ]
            )
            log(budgets[-1].line())
            if opts.mqtt_messages:
                body = mqtt_ingest.payloads("limit", LIVE_FROM, 1, 1)[0]
                limit = await asyncio.to_thread(
                    mosquitto_limit, workdir, opts.mqtt_devices, opts.mqtt_messages // 20, body
                )
                log(f"limit: Mosquitto pub→sub {limit:,.0f} messages/s")
                autovacuum = await vacuumed(dsn)
                log(f"vacuumed and analysed before the MQTT phases (autovacuum {autovacuum})")
                single_mqtt, ten_mqtt = await medmesh_mqtt(url, workdir, opts)
                figures += _logged(
                    [
                        Figure(
                            "MQTT 1/message, messages",
                            single_mqtt.messages_per_second,
                            limit,
                            "Mosquitto pub→sub",
                        ),
                        Figure(
                            "MQTT 10/message, messages",
                            ten_mqtt.messages_per_second,
                            limit,
                            "Mosquitto pub→sub",
                        ),
                        Figure(
                            "MQTT 10/message, readings",
                            ten_mqtt.readings_per_second,
                            copy,
                            "raw COPY",
                        ),
                    ]
                )
            if opts.rss_patients:
                before, after = await rule_state_rss(url, workdir, opts.rss_patients)
                log(
                    f"server RSS: {before:,.0f} MiB idle, {after:,.0f} MiB holding "
                    f"{opts.rss_patients:,} patients' rule state (target < 600 MB)"
                )
    return figures, budgets


def _logged(figures: list[Figure]) -> list[Figure]:
    """Print figures as they are measured, so a run stopped later still has them."""
    for figure in figures:
        log(figure.line())
    return figures


def _profile_file(opts: Options, phase: str) -> Path | None:
    return None if opts.profile is None else opts.profile / f"{phase}.txt"


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MEDMESH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=4,
        help="concurrent devices in each phase (and COPY connections); each waits for its 202 "
        "before it sends again. More senders give group commit more to gather "
        "(docs/benchmarks.md, 'Concurrency')",
    )
    parser.add_argument(
        "--single-senders",
        type=int,
        default=64,
        help="concurrent devices sending single readings (one process and two), each waiting "
        "for its 202; closed-loop, so fewer senders measure the wait, not the server",
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50, help="per sender, per phase")
    parser.add_argument("--single-requests", type=int, default=200, help="per sender")
    parser.add_argument("--copy-rows", type=int, default=100_000)
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument(
        "--group-commit-ms", type=float, default=2, help="the server's MEDMESH_GROUP_COMMIT_MS"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a folder: py-spy records the server during each phase (collapsed stacks)",
    )
    parser.add_argument(
        "--client",
        choices=("light", "httpx"),
        default="light",
        help="the HTTP load generator (default light: _light_http.py)",
    )
    parser.add_argument("--mqtt-devices", type=int, default=20)
    parser.add_argument(
        "--mqtt-messages", type=int, default=20_000, help="single-reading messages; 0: no MQTT"
    )
    parser.add_argument(
        "--rss-patients", type=int, default=10_000, help="patients for the memory figure; 0: none"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    args = parser.parse_args(argv)
    if args.quick:
        return Options(
            args.postgres_url,
            2,
            args.batch,
            3,
            5,
            2_000,
            1,
            args.group_commit_ms,
            args.profile,
            args.client,
            single_senders=2,
            mqtt_devices=2,
            mqtt_messages=200,
            rss_patients=20,
        )
    return Options(
        args.postgres_url,
        args.senders,
        args.batch,
        args.requests,
        args.single_requests,
        args.copy_rows,
        args.history_days,
        args.group_commit_ms,
        args.profile,
        args.client,
        args.single_senders,
        args.mqtt_devices,
        args.mqtt_messages,
        args.rss_patients,
    )


def main() -> int:
    opts = parse_options()
    started = time.perf_counter()
    try:
        figures, budgets = asyncio.run(run(opts))
    except PostgresUnreachable as exc:
        log(f"skipped: {exc}")
        return 0
    log("")
    given = " ".join(sys.argv[1:]) or "defaults"
    log(
        f"side by side, PostgreSQL, {opts.senders} senders, {opts.single_senders} of single "
        f"readings, {opts.client} client ({given})"
    )
    for figure in figures:
        log(figure.line())
    for budget in budgets:
        log(budget.line())
    log(f"load after: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
