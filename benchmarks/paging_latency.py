"""Paging latency: from a critical reading published over MQTT to the page arriving in the
on-call clinician's mailbox, idle and under background load.

The script provisions (SQLite, in a temporary directory) `--devices` background devices and
one probe patient per sample, each probe with its own clinician (the care plan's primary) whose
paging channel is an e-mail address naming the probe, so each page is matched to its reading
(a page says nothing of the patient). It starts a PRIVATE Mosquitto on a free port, an SMTP
sink (aiosmtpd) in this process, and `python -m medmesh serve` with MQTT ingest, SMTP pointed
at the sink and `MEDMESH_PAGING_HOLD_SECONDS=0` (no grouping wait: the figure is the platform's
own delay; a clinic's hold adds to it). A publisher thread (paho, QoS 1, batches of `--batch`
normal heart-rate readings in the past) keeps the background rate; every `--spacing` seconds a
probe publishes one glucose of 45 mg/dL (critical below 54). A sample runs from just before the
publish to the page's arrival at the sink. The first phase has no background load.

Run: `.venv/bin/python benchmarks/paging_latency.py` (`--help`, `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion

from _common import (
    Broker,
    free_port,
    load_average,
    log,
    mosquitto_binary,
    nearest_rank,
    print_machine,
    stop_process,
    tail,
    venv_python,
)
from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.domain.care_plans import CarePlan
from medmesh.paging.channels import ChannelKind
from medmesh.paging.repository import Channels
from medmesh.store import migrate
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database

TOPIC = "medmesh/v1/devices/{}/readings"
ASSIGNED_FROM = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class Sink:
    """Keeps when each page arrived, by recipient."""

    arrived: dict[str, float] = field(default_factory=dict)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        self.arrived.setdefault(str(message["To"]), time.time())
        return "250 OK"


async def provision(url: str, devices: int, probes: int) -> tuple[list[str], list[tuple[str, str]]]:
    database = Database(url)
    await migrate.upgrade(database)
    background = []
    for i in range(devices):
        patient = await provisioning.create_patient(
            database, family="Load", given=str(i), identifier=f"BG-{i}"
        )
        device = await provisioning.register_device(database, display_name="bg", model="HR-1")
        await provisioning.assign_device(database, device.device_id, patient.id, ASSIGNED_FROM)
        background.append(device.device_id)
    probe_list = []
    for i in range(probes):
        patient = await provisioning.create_patient(
            database, family="Probe", given=str(i), identifier=f"PR-{i}"
        )
        device = await provisioning.register_device(database, display_name="probe", model="G-1")
        await provisioning.assign_device(database, device.device_id, patient.id, ASSIGNED_FROM)
        clinician = await provisioning.create_user(
            database,
            username=f"oncall-{i}",
            display_name=f"On call {i}",
            role=Role.CLINICIAN,
            password="correct horse battery staple",
        )
        await provisioning.add_to_care_team(database, patient.id, clinician.id, added_by="bench")
        address = f"probe-{i}@bench.example"
        async with database.write() as conn:
            await CarePlans(conn).put(
                CarePlan(patient.id, primary_clinician=clinician.id), datetime.now(UTC), "bench"
            )
            await Channels(conn).add(
                clinician.id, ChannelKind.EMAIL, address, "bench", datetime.now(UTC)
            )
        probe_list.append((device.device_id, address))
    await database.dispose()
    return background, probe_list


ACHIEVED: dict[float, float] = {}  # target rate -> readings/s handed to the broker (QoS 1)


def publisher(
    port: int, devices: list[str], rate: float, batch: int, stop: threading.Event
) -> None:
    """Background load: normal heart rates in the past, `rate` readings a second."""
    if rate <= 0:
        return
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent, started, n = 0, time.monotonic(), 0
    epoch = datetime(2021, 1, 1, tzinfo=UTC)
    while not stop.is_set():
        device = devices[n % len(devices)]
        readings = [
            {
                "id": f"bg-{n}-{k}",
                "type": "heart-rate",
                "time": (epoch + timedelta(minutes=n * batch + k)).isoformat(),
                "value": 70,
                "unit": "/min",
            }
            for k in range(batch)
        ]
        client.publish(TOPIC.format(device), orjson.dumps({"readings": readings}), qos=1)
        n += 1
        sent += batch
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    ACHIEVED[rate] = sent / (time.monotonic() - started)
    client.loop_stop()
    client.disconnect()


def probe(port: int, device_id: str) -> float:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    body = {
        "readings": [
            {
                "id": f"probe-{uuid.uuid4().hex[:8]}",
                "type": "blood-glucose",
                "time": datetime.now(UTC).isoformat(),
                "value": 45,
                "unit": "mg/dL",
            }
        ]
    }
    published = time.time()
    info = client.publish(TOPIC.format(device_id), orjson.dumps(body), qos=1)
    info.wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()
    return published


def _subscribed(log_path: Path) -> bool:
    return b"MQTT ingest subscribed" in log_path.read_bytes()


def _spawn(
    env: dict[str, str], port: int, directory: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [venv_python(), "-m", "medmesh", "serve", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(timeout=0.5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{tail(log_path)}")
            try:
                ok = (await client.get(base + "/healthz")).status_code == 200
            except httpx.TransportError:
                ok = False
            if ok and _subscribed(log_path):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{tail(log_path)}")


async def phase(
    url: str,
    directory: Path,
    rate: float,
    probes: list[tuple[str, str]],
    args: argparse.Namespace,
    background: list[str],
) -> list[float | None]:
    broker = Broker(directory, max_queued=100_000)
    broker.start()
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    port = free_port()
    log_path = directory / f"server-{int(rate)}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDMESH_")}
    env.update(
        MEDMESH_DATABASE_URL=url,
        MEDMESH_MQTT_HOST="127.0.0.1",
        MEDMESH_MQTT_PORT=str(broker.port),
        MEDMESH_SMTP_HOST="127.0.0.1",
        MEDMESH_SMTP_PORT=str(controller.port),
        MEDMESH_SMTP_STARTTLS="false",
        MEDMESH_PAGING_HOLD_SECONDS="0",
        MEDMESH_PAGING_POLL_SECONDS="0.2",
        MEDMESH_ALERT_CHECK_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    process = _spawn(env, port, directory, log_path)
    stop = threading.Event()
    load = threading.Thread(
        target=publisher, args=(broker.port, background, rate, args.batch, stop), daemon=True
    )
    latencies: list[float | None] = []
    try:
        await wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        load.start()
        await asyncio.sleep(args.warmup)
        sent: list[tuple[str, float]] = []
        for device_id, address in probes:
            sent.append((address, await asyncio.to_thread(probe, broker.port, device_id)))
            await asyncio.sleep(args.spacing)
        for _ in range(int(args.timeout / 0.05)):
            if len(sink.arrived) >= len(sent):
                break
            await asyncio.sleep(0.05)
        for address, published in sent:
            arrived = sink.arrived.get(address)
            latencies.append(None if arrived is None else arrived - published)
    finally:
        stop.set()
        if load.is_alive():
            load.join(timeout=10)
        await asyncio.to_thread(stop_process, process)
        controller.stop()
        broker.stop()
    return latencies


def report(rate: float, latencies: list[float | None]) -> None:
    done = sorted(x * 1000 for x in latencies if x is not None)
    lost = len(latencies) - len(done)
    if not done:
        log(f"{rate:>6.0f} readings/s background: no page arrived ({lost} timeouts)")
        return
    p50, p95, p99 = (nearest_rank(done, p) for p in (50, 95, 99))
    achieved = ACHIEVED.get(rate, 0.0)
    log(
        f"{rate:>6.0f} readings/s background (published {achieved:.0f}/s): "
        f"reading -> page p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms "
        f"({len(done)} pages, {lost} timeouts)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="background readings/s")
    parser.add_argument("--samples", type=int, default=40, help="probes per phase")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between probes")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="a few samples, seconds long")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rate, args.warmup, args.devices, args.timeout = 3, 200.0, 1.0, 5, 30.0
    if mosquitto_binary() is None:
        log("skipped: the mosquitto broker is not installed")
        return
    await print_machine(broker=True)
    with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        background, probes = await provision(url, args.devices, args.samples * 2)
        for number, rate in enumerate((0.0, args.rate)):
            chosen = probes[number * args.samples : (number + 1) * args.samples]
            directory = Path(tmp) / f"phase-{number}"
            directory.mkdir()
            report(rate, await phase(url, directory, rate, chosen, args, background))
    log(f"load after: {load_average()}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    asyncio.run(main())
