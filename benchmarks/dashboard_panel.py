"""The clinician dashboard with a full ward streaming: is the patient panel still quick?

Provisions (in-process, on SQLite) `--patients` patients (default 500), each with a device and
two hours of minute heart rate and SpO2, some with open alerts, and one patient with 90 days of
minute readings; starts `python -m medmesh serve`; signs in as a clinician over HTTP; then:

1. idle: latency of the panel page (page 1, 50 rows), of a refresh of 50 rows by id, and of the
   patient page over 24 hours and over 90 days (the long range aggregated by the database);
2. streaming: every device posts one reading every `--interval` seconds (500 devices, 30 s:
   about 17 single-reading HTTP requests a second, each its own commit) for `--seconds`;
   meanwhile a client holds the panel's event stream open, counts its frames, and answers
   each `rows` frame as the browser does, refreshing the rows of its page that changed; the
   panel page is timed again under this load.

Client and server share the machine; the figures are end-to-end wall-clock times.

First, the chart data alone, in-process, on SQLite and on PostgreSQL (`--charts-only` runs just
this): one patient with `--long-days` of minute heart rate and SpO2 stored through the
repository (so rollups are written as at ingest); the two 90-day charts' data read as the
patient page reads them (`load_series`: hourly rollups), beside the path before rollups
(`Vitals.buckets`: every reading read and decrypted) and, as the limit, a bare SELECT of the
same rollup rows without opening them.

Run: `.venv/bin/python benchmarks/dashboard_panel.py` (`--help` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from sqlalchemy import select, text

from medmesh import provisioning
from medmesh.access.identity import totp
from medmesh.access.identity.credentials import hash_secret, new_secret
from medmesh.access.identity.principals import Role
from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.registry import Device, DeviceAssignment, Patient
from medmesh.domain.vocabulary import Measure, measure_by_code
from medmesh.store import migrate
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.store.observations import Observations
from medmesh.store.registry import Assignments, Devices, Patients
from medmesh.store.rollups import HOUR
from medmesh.store.schema import observation_rollups
from medmesh.store.vitals import Vitals
from medmesh.web.charts import Grid, load_series
from medmesh.web.vitals import HEART_RATE as HR_CHART
from medmesh.web.vitals import SPO2 as SPO2_CHART

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
STARTUP_TIMEOUT = 60.0
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BENCH_USER = "bench.clinician"
BENCH_PASSWORD = "violet kettle harbour"


def _measure(code: str) -> Measure:
    found = measure_by_code(code)
    assert found is not None
    return found


HEART_RATE, SPO2 = _measure("8867-4"), _measure("2708-6")


@dataclass(frozen=True, slots=True)
class Ward:
    devices: list[tuple[str, str]]  # (device id, secret)
    long_patient: str
    totp_secret: str  # of the clinician BENCH_USER, whose password is BENCH_PASSWORD


def _readings(
    patient_id: str, device_id: str, start: datetime, minutes: int, prefix: str = "seed"
) -> list[Reading]:
    """Minute heart rate and SpO2 readings, as the pipeline hands them to the repository."""
    readings = []
    for m in range(minutes):
        at = start + timedelta(minutes=m)
        for measure, value in ((HEART_RATE, 60 + m % 40), (SPO2, 93 + m % 6)):
            assert measure.quantity is not None
            readings.append(
                Reading(
                    device_id=device_id,
                    message_id=f"{prefix}-{measure.code}-{m}",
                    patient_id=patient_id,
                    measure=measure,
                    effective=at,
                    values=(MeasuredValue(measure.code, float(value), measure.quantity.unit),),
                )
            )
    return readings


async def provision(url: str, count: int, long_days: int) -> Ward:
    database = Database(url)
    await migrate.upgrade(database)
    now = datetime.now(UTC)
    rng = random.Random(1)
    devices: list[tuple[str, str]] = []
    patients: list[str] = []
    async with database.write() as conn:
        for n in range(count):
            patient = Patient(str(uuid.uuid4()), "urn:bench", f"B-{n}", f"Family{n:04d}", "Bench")
            await Patients(conn).add(patient)
            device = Device(str(uuid.uuid4()), f"Monitor {n}")
            secret = new_secret("mmd")
            await Devices(conn).add(device, hash_secret(secret))
            await Assignments(conn).assign(
                DeviceAssignment(device.id, patient.id, now - timedelta(days=91))
            )
            devices.append((device.id, secret))
            patients.append(patient.id)
        # Through the repository, which seals each value with the patient's key as ingest does.
        for n, patient_id in enumerate(patients):
            readings = _readings(patient_id, devices[n][0], now - timedelta(hours=2), 120)
            await Observations(conn).add_batch(readings, now)
        long_readings = _readings(
            patients[0], devices[0][0], now - timedelta(days=long_days), long_days * 1440, "long"
        )
        for start in range(0, len(long_readings), 10_000):
            await Observations(conn).add_batch(long_readings[start : start + 10_000], now)
        for patient_id in rng.sample(patients, max(1, count // 15)):
            severity = rng.choice(list(Severity))
            await Alerts(conn).add(
                Alert(
                    id=str(uuid.uuid4()),
                    patient_id=patient_id,
                    rule="bench",
                    dedupe_key=f"bench:{patient_id}",
                    severity=severity,
                    status=AlertStatus.OPEN,
                    title="Benchmark alert",
                    detail="seeded",
                    device_id=None,
                    observation_id=None,
                    opened_at=now,
                    last_triggered_at=now,
                    trigger_count=1,
                )
            )
    clinician = await provisioning.create_user(
        database,
        username=BENCH_USER,
        display_name="Bench Clinician",
        role=Role.CLINICIAN,
        password=BENCH_PASSWORD,
    )
    # The access policy shows a clinician only the patients whose care team they are on.
    for patient_id in patients:
        await provisioning.add_to_care_team(
            database, patient_id, clinician.id, added_by="benchmark"
        )
    secret = totp.new_secret()
    await provisioning.activate_totp(database, BENCH_USER, secret)
    await database.dispose()
    return Ward(devices, patients[0], secret)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDMESH_DATABASE_URL": url}
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(VENV_PYTHON), "-m", "medmesh", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def serving(url: str, log: Path) -> AsyncIterator[tuple[str, int]]:
    port = _free_port()
    process = _spawn(url, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient() as probe:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited; see {log}")
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(f"{base}/healthz", timeout=1)).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {log}")
                await asyncio.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def sign_in(http: httpx.AsyncClient, secret: str) -> None:
    """Username and password, then the code an authenticator app would show."""
    steps = (
        ("/login", {"username": BENCH_USER, "password": BENCH_PASSWORD}),
        ("/login/code", {"code": totp.code_at(secret, datetime.now(UTC))}),
    )
    for path, fields in steps:
        form = await http.get(path)
        found = CSRF.search(form.text)
        assert found is not None
        response = await http.post(path, data={**fields, "csrf_token": found.group(1)})
        assert response.status_code == 303, "sign-in refused"


async def timed(call: Callable[[], Awaitable[httpx.Response]], times: int) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        response = await call()
        took.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return took


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line(label: str, value: str) -> None:
    print(f"  {label:<44} {value}")


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"  {label:<44} p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


def percentile_ms(seconds: list[float], pct: int) -> float:
    ms = sorted(s * 1000 for s in seconds)
    return ms[min(len(ms) - 1, round(pct / 100 * (len(ms) - 1)))]


def ratio(figure: list[float], limit: list[float], pct: int) -> str:
    """A figure's percentile beside the same percentile of its same-run limit, e.g. `3.1×`."""
    return f"{percentile_ms(figure, pct) / max(percentile_ms(limit, pct), 1e-6):.1f}×"


async def device(
    http: httpx.AsyncClient, device_id: str, secret: str, interval: float, until: float
) -> int:
    """One device: a reading every `interval` seconds, starting at a random point of the first
    interval (devices are not synchronised)."""
    sent = 0
    await asyncio.sleep(random.random() * interval)
    while time.monotonic() < until:
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "readings": [
                {
                    "id": f"live-{device_id}-{sent}",
                    "type": "heart-rate",
                    "time": at,
                    "value": 70 + sent % 30,
                    "unit": "/min",
                }
            ]
        }
        response = await http.post(
            "/ingest/v1/readings", json=body, headers={"Authorization": f"Bearer {secret}"}
        )
        sent += response.status_code == 202
        await asyncio.sleep(interval)
    return sent


async def watch_panel(
    http: httpx.AsyncClient,
    visible: set[str],
    until: float,
    refreshes: list[float],
    connected: asyncio.Event,
) -> tuple[int, int, int]:
    """The browser's side: read the panel stream, refresh visible changed rows per frame."""
    frames = ids = 0
    async with http.stream(
        "GET", "/dashboard/events", headers={"Accept": "text/event-stream"}
    ) as stream:
        assert stream.status_code == 200, stream.status_code
        connected.set()
        kind = None
        lines = stream.aiter_lines()
        while time.monotonic() < until:
            try:
                line = await asyncio.wait_for(anext(lines), until - time.monotonic())
            except TimeoutError:
                break
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "rows":
                changed = orjson.loads(line.removeprefix("data: "))["data"]["patients"]
                frames += 1
                ids += len(changed)
                mine = [i for i in changed if i in visible]
                if mine:
                    started = time.perf_counter()
                    response = await http.get("/panel/rows", params={"ids": ",".join(mine)})
                    assert response.status_code == 200
                    refreshes.append(time.perf_counter() - started)
    return frames, ids, len(refreshes)


def _admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextlib.asynccontextmanager
async def scratch_postgres(admin_url: str) -> AsyncIterator[str | None]:
    """A new, empty PostgreSQL database (dropped after); None when none is reachable."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"medmesh_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(_admin_dsn(admin_url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"PostgreSQL not reachable at {admin_url} ({type(exc).__name__}): skipped")
        yield None
        return
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def chart_figures(url: str, label: str, days: int, repeat: int) -> None:
    """The 90-day chart data on one backend: rollups (now), every reading (before), and a bare
    SELECT of the rollup rows (the limit)."""
    database = Database(url)
    try:
        await migrate.upgrade(database)
        now = datetime.now(UTC)
        async with database.write() as conn:
            patient = Patient(str(uuid.uuid4()), "urn:bench", "C-1", "Chart", "Bench")
            await Patients(conn).add(patient)
            device = Device(str(uuid.uuid4()), "Monitor")
            await Devices(conn).add(device, hash_secret(new_secret("mmd")))
            await Assignments(conn).assign(
                DeviceAssignment(device.id, patient.id, now - timedelta(days=days + 1))
            )
        started = time.monotonic()
        readings = _readings(patient.id, device.id, now - timedelta(days=days), days * 1440)
        for at in range(0, len(readings), 10_000):
            async with database.write() as conn:
                await Observations(conn).add_batch(readings[at : at + 10_000], now)
        stored = time.monotonic() - started
        if database.backend == "postgresql":  # as autovacuum would have, long before 90 days
            async with database.write() as conn:
                await conn.execute(text("ANALYZE observations"))
                await conn.execute(text("ANALYZE observation_rollups"))
        start = now - timedelta(days=days)
        charts = (HR_CHART, SPO2_CHART)

        async def rollups() -> int:
            points = 0
            for vital in charts:
                async with database.read() as conn:
                    series = await load_series(Vitals(conn), patient.id, vital, start, now)
                points += sum(len(b) for _, b in series)
            return points

        async def every_reading() -> int:
            grid = Grid.over(start, now)
            points = 0
            for vital in charts:
                async with database.read() as conn:
                    found = await Vitals(conn).buckets(
                        patient.id, vital.series[0].code, origin=start, width=grid.width
                    )
                points += len(found)
            return points

        async def bare_select() -> int:
            rows = 0
            for vital in charts:
                async with database.read() as conn:
                    query = select(observation_rollups.c.bucket, observation_rollups.c.stats).where(
                        observation_rollups.c.patient_id == patient.id,
                        observation_rollups.c.code == vital.series[0].code,
                        observation_rollups.c.component == "",
                        observation_rollups.c.resolution == HOUR,
                        observation_rollups.c.bucket >= int(start.timestamp()) // HOUR * HOUR,
                    )
                    rows += len((await conn.execute(query)).all())
            return rows

        print(
            f"\n90-day chart data, {label}: {len(readings)} readings over {days} days stored "
            f"in {stored:.0f} s (rollups written as at ingest); two charts (heart rate, SpO2)"
        )
        measured: dict[str, list[float]] = {}
        # As `medmesh serve` does once started (app.py): what exists now, here the stored
        # readings' fixture too, is out of the collector's reach, so a full collection walks
        # only what the timed reads make.
        del readings
        gc.collect()
        gc.freeze()
        for name, action in (
            ("limit: bare SELECT of the rollup rows", bare_select),
            ("after: from hourly rollups (load_series)", rollups),
            ("before: every reading decrypted (Vitals.buckets)", every_reading),
        ):
            took = []
            count = 0
            for _ in range(repeat):
                began = time.perf_counter()
                count = await action()
                took.append(time.perf_counter() - began)
            measured[name.partition(":")[0]] = took
            print(summary(f"{name} [{count}]", took))
        limit, after = measured["limit"], measured["after"]
        print(
            f"  after / same-run limit: p50 {ratio(after, limit, 50)}, "
            f"p95 {ratio(after, limit, 95)}"
            f"   (target p95 < 150 ms; load {os.getloadavg()[0]:.1f})"
        )
    finally:
        gc.unfreeze()
        await database.dispose()


async def charts(options: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-chart-"))
    backends = options.chart_backends.split(",")
    if "sqlite" in backends:
        await chart_figures(
            f"sqlite:///{workdir / 'charts.db'}", "SQLite", options.long_days, options.repeat
        )
    if "postgresql" not in backends:
        return
    async with scratch_postgres(options.postgres_url) as pg_url:
        if pg_url is not None:
            await chart_figures(pg_url, "PostgreSQL", options.long_days, options.repeat)


async def main(options: argparse.Namespace) -> None:
    await charts(options)
    if options.charts_only:
        return
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-dash-"))
    url = f"sqlite:///{workdir / 'medmesh.db'}"
    started = time.monotonic()
    ward = await provision(url, options.patients, options.long_days)
    print(f"medmesh dashboard benchmark on {platform.node()} ({os.cpu_count()} CPUs), SQLite")
    print(f"provisioned {options.patients} patients in {time.monotonic() - started:.0f} s")
    async with (
        serving(url, workdir / "server.log") as (base, pid),
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        await sign_in(http, ward.totp_secret)
        page = (await http.get("/")).text
        visible = set(re.findall(r'id="row-([0-9a-f-]{36})"', page))
        ids = ",".join(sorted(visible))
        print(f"\nidle (panel page 1 shows {len(visible)} of {options.patients} patients)")
        print(summary("GET / (panel, page 1)", await timed(lambda: http.get("/"), options.repeat)))
        print(
            summary(
                "GET /panel/rows?ids=… (50 rows)",
                await timed(lambda: http.get("/panel/rows", params={"ids": ids}), options.repeat),
            )
        )
        for key in ("24h", "90d"):
            path = f"/patients/{ward.long_patient}?range={key}"
            print(
                summary(
                    f"GET patient page, {key} ({options.long_days} days stored)",
                    await timed(lambda p=path: http.get(p), max(1, options.repeat // 2)),
                )
            )

        until = time.monotonic() + options.seconds
        rate = len(ward.devices) / options.interval
        print(
            f"\nstreaming: {len(ward.devices)} devices, one reading each every "
            f"{options.interval:g} s (~{rate:.0f} readings/s) for {options.seconds:g} s"
        )
        refreshes: list[float] = []
        connected = asyncio.Event()
        watcher = asyncio.create_task(watch_panel(http, visible, until + 1, refreshes, connected))
        await asyncio.wait_for(connected.wait(), 30)
        server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
        # One client for all devices: 500 clients would spend seconds of this process's CPU
        # on their own set-up and skew the figures.
        devices_http = httpx.AsyncClient(
            base_url=base, timeout=60, limits=httpx.Limits(max_connections=100)
        )
        senders = [
            asyncio.create_task(device(devices_http, d, s, options.interval, until))
            for d, s in ward.devices
        ]
        await asyncio.sleep(options.seconds / 4)
        under_load = await timed(lambda: http.get("/"), max(1, options.repeat // 2))
        sent = sum(await asyncio.gather(*senders))
        await devices_http.aclose()
        frames, named, answered = await watcher
        server_used = cpu_seconds(pid)
        client_used = time.process_time() - client_cpu
        per_second = options.seconds
        line("readings accepted", f"{sent} ({sent / per_second:.0f}/s)")
        line(
            "panel stream frames",
            f"{frames} ({frames / per_second:.2f}/s), "
            f"{named / max(frames, 1):.0f} patients named per frame",
        )
        line("row refreshes by the client", f"{answered} ({answered / per_second:.2f}/s)")
        if server_used is not None and server_cpu is not None:
            line(
                "CPU, server / this client (% of one core)",
                f"{(server_used - server_cpu) / per_second * 100:.0f}% / "
                f"{client_used / per_second * 100:.0f}%",
            )
        if refreshes:
            print(summary("GET /panel/rows (changed visible rows)", refreshes))
        print(summary("GET / (panel, page 1) under load", under_load))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds between a device's readings"
    )
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the streaming phase")
    parser.add_argument(
        "--long-days", type=int, default=90, help="days of minute readings for one patient"
    )
    parser.add_argument("--repeat", type=int, default=20, help="requests timed per idle figure")
    parser.add_argument(
        "--charts-only", action="store_true", help="only the chart data figures, both backends"
    )
    parser.add_argument(
        "--chart-backends", default="sqlite,postgresql", help="backends of the chart figures"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server where a scratch database may be created for the chart figures",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 patients, 2 days stored, 3 s of streaming at 1 s: a smoke run",
    )
    options = parser.parse_args()
    if options.quick:
        options.patients, options.long_days, options.seconds, options.interval = 20, 2, 3.0, 1.0
        options.repeat = 3
    asyncio.run(main(options))
    sys.exit(0)
