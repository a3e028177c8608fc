"""The fault-injection harness: a medmesh deployment in real processes (`medmesh serve` with
HTTP and MLLP, a `medmesh ingest-worker`, a private Mosquitto, SQLite or a private PostgreSQL),
steady load over HTTP, MQTT and MLLP at once, and a ledger that knows every reading sent and
every acknowledgement received. `run_fault` injects one fault under that load, repairs it the
way an operator or a supervisor would (restart a killed process, start the broker again, free
the disk), and measures what came through.

Shared by tests/faults (a few seconds of load per fault) and benchmarks/faults.py (soaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from medmesh import provisioning
from medmesh.access.identity.credentials import new_secret
from medmesh.access.identity.principals import Role
from medmesh.crypto.local import default_key_paths
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import observations
from tests.conftest import ASSIGNED_SINCE
from tests.faults.ledger import HTTP, MLLP, MQTT, FaultRow, Ledger
from tests.helpers import BASE_TIME, stamp
from tests.integration.test_mqtt_redelivery import Worker
from tests.live_server import LiveServer, free_port
from tests.mosquitto_broker import INGEST_USER, Broker

READINGS_PER_MESSAGE = 10  # HTTP and MQTT; an MLLP message carries one OBX
START, END = b"\x0b", b"\x1c\x0d"
NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code
MLLP_SERIAL = "FAULTS-MONITOR-1"
# How long a sender keeps resending one message after the load stops (a device's buffer).
DRAIN_SECONDS = 60.0
# A process start-up on a loaded 2-core machine has taken over 60 s (imports dominate).
START_TIMEOUT = 300.0


@dataclass
class Stack:
    """The deployment under test. `database_url` may live on a size-limited file system."""

    backend: str
    database_url: str
    workdir: Path
    broker_dir: Path
    cluster: Any = None  # a PostgresCluster for the private PostgreSQL
    database_name: str = ""  # on that cluster
    small_disk: Path | None = None  # the size-limited file system holding the SQLite file
    no_small_disk: str | None = None  # why there is none
    server: LiveServer | None = None
    worker: Worker | None = None
    broker: Broker | None = None
    mllp_port: int = 0
    http_device: tuple[str, str] = ("", "")  # id, secret
    mqtt_device: tuple[str, str] = ("", "")  # id, broker password
    mllp_device: str = ""
    alert_device: tuple[str, str] = ("", "")
    alert_patient: str = ""
    token: str = ""
    ingest_password: str = ""

    async def provision(self) -> None:
        database = Database(self.database_url)
        try:
            await migrate.upgrade(database)
            patient = await provisioning.create_patient(
                database, family="Load", given="Steady", identifier="FAULTS-1", gender="female"
            )
            alerting = await provisioning.create_patient(
                database, family="Alert", given="Raised", identifier="FAULTS-2", gender="male"
            )
            clinician = await provisioning.create_user(
                database,
                username="dr-faults",
                display_name="dr faults",
                role=Role.CLINICIAN,
                password="correct horse battery staple",
            )
            for p in (patient.id, alerting.id):
                await provisioning.add_to_care_team(database, p, clinician.id, added_by="faults")
            self.token = await provisioning.issue_user_token(
                database, user_id=clinician.id, scopes="user/*.cruds"
            )
            devices = []
            for name, serial, who in (
                ("http", None, patient.id),
                ("mqtt", None, patient.id),
                ("mllp", MLLP_SERIAL, patient.id),
                ("alert", None, alerting.id),
            ):
                credential = await provisioning.register_device(
                    database, display_name=f"faults-{name}", serial_number=serial
                )
                await provisioning.assign_device(
                    database, credential.device_id, who, ASSIGNED_SINCE
                )
                devices.append(credential)
            self.http_device = (devices[0].device_id, devices[0].secret)
            self.mqtt_device = (devices[1].device_id, new_secret("mqp"))
            self.mllp_device = devices[2].device_id
            self.alert_device = (devices[3].device_id, devices[3].secret)
            self.alert_patient = alerting.id
            self.ingest_password = new_secret("mqp")
        finally:
            await database.dispose()

    def start(self) -> None:
        """Broker (persistent sessions, as deploy/mosquitto/mosquitto.conf), server, worker."""
        users = {self.mqtt_device[0]: self.mqtt_device[1], INGEST_USER: self.ingest_password}
        self.broker = Broker(self.broker_dir, users, persistence=True)
        self.broker.start()
        self.mllp_port = free_port()
        self.server = LiveServer(
            self.database_url,
            self.workdir / "server.log",
            env={
                "MEDMESH_AFTER_COMMIT_RECOVER_SECONDS": "1",
                "MEDMESH_RATE_LIMIT_ENABLED": "false",
                "MEDMESH_MQTT_HOST": "",
            },
            args=["--mllp-port", str(self.mllp_port)],
        )
        self.server.start(START_TIMEOUT)
        self.worker = Worker(
            self.database_url,
            self.broker,
            self.ingest_password,
            "faults-worker",
            self.workdir / "worker.log",
        )
        self.worker.env["MEDMESH_AFTER_COMMIT_RECOVER_SECONDS"] = "1"
        self.worker.start(START_TIMEOUT)

    def key_directory(self) -> Path:
        """Where the deployment's patient keys are kept by default (docs/encryption.md)."""
        return default_key_paths(self.database_url)[0].parent

    def stop(self) -> None:
        for part in (self.worker, self.server, self.broker):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()

    async def stored(self) -> Counter[tuple[str, str]]:
        """Rows per (channel, message id) of the three load devices."""
        channel_of = {
            self.http_device[0]: HTTP,
            self.mqtt_device[0]: MQTT,
            self.mllp_device: MLLP,
        }
        database = Database(self.database_url)
        try:
            async with database.read() as conn:
                rows = await conn.execute(
                    select(observations.c.device_id, observations.c.message_id).where(
                        observations.c.device_id.in_(list(channel_of))
                    )
                )
                return Counter((channel_of[d], m) for d, m in rows)
        finally:
            await database.dispose()


def _readings(prefix: str, seq: int, count: int) -> list[dict[str, Any]]:
    at = BASE_TIME + timedelta(seconds=seq)
    return [
        {
            "id": f"{prefix}-{seq}-{i}",
            "type": "heart-rate",
            "time": stamp(at + timedelta(milliseconds=i)),
            "value": 60 + (seq + i) % 30,
            "unit": "/min",
        }
        for i in range(count)
    ]


def _oru(control_id: str, seq: int) -> bytes:
    t = (BASE_TIME + timedelta(seconds=seq)).strftime("%Y%m%d%H%M%S+0000")
    text = "\r".join(
        [
            f"MSH|^~\\&|{MLLP_SERIAL}^0123456789ABCDEF^EUI-64|ICU|medmesh|HOSP|{t}||"
            f"ORU^R01^ORU_R01|{control_id}|P|2.6|||NE|AL",
            "PID|||FAULTS-1^^^urn:medmesh:mrn^MR||Load^Steady",
            f"OBR|1|{control_id}^MONITOR||182777000^monitoring^SCT|||{t}",
            f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|{60 + seq % 30}|"
            f"264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||{t}",
        ]
    )
    return START + text.encode() + END


class Load:
    """Senders on the three channels, each resending a message until it is acknowledged
    (as a device with a store-and-forward buffer does), until `stop` and then `drain`."""

    def __init__(self, stack: Stack, ledger: Ledger, *, interval: float, http_concurrency: int):
        self.stack, self.ledger = stack, ledger
        self.interval = interval
        self.http_concurrency = http_concurrency
        self.run_id = uuid.uuid4().hex[:6]
        self._counter = itertools.count()
        self._stopping = asyncio.Event()
        self._give_up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._mqtt: paho.Client | None = None
        self._pubacks: dict[int, int] = {}  # PUBACK reason code by message id

    def start(self) -> None:
        self._mqtt = self._mqtt_client()
        for _ in range(self.http_concurrency):
            self._tasks.append(asyncio.create_task(self._loop(self._send_http)))
        self._tasks.append(asyncio.create_task(self._loop(self._send_mqtt)))
        self._tasks.append(asyncio.create_task(self._loop(self._send_mllp)))

    async def stop(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop new messages; resend the unacknowledged ones for up to `drain` seconds."""
        self._stopping.set()
        _, pending = await asyncio.wait(self._tasks, timeout=drain)
        self._give_up.set()
        await asyncio.gather(*pending)  # a sender that broke fails the run
        for task in self._tasks:
            task.result()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()

    async def _loop(self, send: Callable[[int], Awaitable[bool]]) -> None:
        while not self._stopping.is_set():
            seq = next(self._counter)
            delay = 0.1
            while not await send(seq) and not self._give_up.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            await asyncio.sleep(self.interval)

    async def _send_http(self, seq: int) -> bool:
        batch = _readings(f"h{self.run_id}", seq, READINGS_PER_MESSAGE)
        ids = [r["id"] for r in batch]
        self.ledger.send(HTTP, ids)
        server = self.stack.server
        assert server is not None
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"{server.base_url}/ingest/v1/readings",
                    json={"readings": batch},
                    headers={"Authorization": f"Bearer {self.stack.http_device[1]}"},
                )
        except httpx.HTTPError as exc:
            self.ledger.refuse(HTTP, ids, f"no answer ({type(exc).__name__})")
            return False
        if response.status_code == 202:
            receipt = response.json()
            if receipt["accepted"] + receipt["duplicates"] == len(ids):
                self.ledger.ack(HTTP, ids)
                return True
            self.ledger.refuse(HTTP, ids, f"receipt refused some: {receipt['rejected']}")
            return True  # refused with a reason: not resent
        self.ledger.refuse(HTTP, ids, f"HTTP {response.status_code}")
        return False

    def _mqtt_client(self) -> paho.Client:
        broker = self.stack.broker
        assert broker is not None
        device, password = self.stack.mqtt_device
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"faults-{self.run_id}",
            protocol=paho.MQTTv5,
        )
        client.username_pw_set(device, password)
        client.on_publish = self._on_puback
        client.reconnect_delay_set(0.1, 1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        return client

    def _on_puback(self, _client: Any, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        self._pubacks[mid] = int(getattr(reason, "value", reason))

    async def _send_mqtt(self, seq: int) -> bool:
        batch = _readings(f"q{self.run_id}", seq, READINGS_PER_MESSAGE)
        ids = [r["id"] for r in batch]
        self.ledger.send(MQTT, ids)
        client = self._mqtt
        assert client is not None
        topic = f"medmesh/v1/devices/{self.stack.mqtt_device[0]}/readings"

        def publish() -> bool:
            info = client.publish(topic, orjson.dumps({"readings": batch}), qos=1)
            try:
                info.wait_for_publish(timeout=2)
                published = info.is_published()
            except (RuntimeError, ValueError):  # not connected: paho raises
                return False
            # 16, "no matching subscribers": the broker dropped it (no worker subscribed yet,
            # e.g. just after a restart). The device sends it again (docs/mqtt.md).
            if published and self._pubacks.pop(info.mid, 0) == NO_MATCHING_SUBSCRIBERS:
                self.ledger.refuse(MQTT, ids, "PUBACK 16: no matching subscribers")
                return False
            return published

        if await asyncio.to_thread(publish):
            self.ledger.ack(MQTT, ids)  # the broker holds it (PUBACK)
            return True
        self.ledger.refuse(MQTT, ids, "no PUBACK from the broker")
        return False

    async def _send_mllp(self, seq: int) -> bool:
        control_id = f"c{self.run_id}-{seq}"
        ids = [f"{control_id}:1"]
        self.ledger.send(MLLP, ids)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.stack.mllp_port), 5
            )
        except (OSError, TimeoutError) as exc:
            self.ledger.refuse(MLLP, ids, f"no connection ({type(exc).__name__})")
            return False
        try:
            writer.write(_oru(control_id, seq))
            await writer.drain()
            block = await asyncio.wait_for(reader.readuntil(END), 15)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.ledger.refuse(MLLP, ids, f"closed without ACK ({type(exc).__name__})")
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        segments = block[1:-2].decode().split("\r")
        msa = next(s for s in segments if s.startswith("MSA|")).split("|")
        if msa[1] == "AA":
            self.ledger.ack(MLLP, ids)
            return True
        self.ledger.refuse(MLLP, ids, f"ACK {msa[1]}: {msa[3] if len(msa) > 3 else ''}")
        return True  # refused with a reason: not resent


async def _send_alerting_reading(stack: Stack, tag: str, give_up: float) -> None:
    """A blood pressure in hypertensive crisis, resent until acknowledged."""
    server = stack.server
    reading = {
        "id": f"alert-{tag}",
        "type": "blood-pressure",
        "time": stamp(BASE_TIME),
        "value": {"systolic": 210, "diastolic": 95},
        "unit": "mm[Hg]",
    }
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        assert server is not None
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"{server.base_url}/ingest/v1/readings",
                    json={"readings": [reading]},
                    headers={"Authorization": f"Bearer {stack.alert_device[1]}"},
                )
            if response.status_code == 202:
                return
        await asyncio.sleep(0.2)


class AlertStream:
    """A client of the event stream (`GET /api/v1/events`) for the alert patient that, like a
    browser's EventSource, connects again whenever the stream breaks and then names the last
    event id it was given (`Last-Event-ID`); `seen` is set when an `alert` event arrives."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen = asyncio.Event()
        self.last_event_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while not self.seen.is_set():
            server = self.stack.server
            assert server is not None
            headers = {"Authorization": f"Bearer {self.stack.token}"}
            if self.last_event_id is not None:
                headers["Last-Event-ID"] = self.last_event_id
            with contextlib.suppress(httpx.HTTPError):
                async with (
                    httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http,
                    http.stream(
                        "GET",
                        f"{server.base_url}/api/v1/events",
                        params={"patient": self.stack.alert_patient},
                        headers=headers,
                    ) as response,
                ):
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            self.last_event_id = line.removeprefix("id: ").strip()
                        elif line.strip() == "event: alert":
                            self.seen.set()
                            return
            await asyncio.sleep(0.2)


async def _alert_listed(stack: Stack, timeout: float) -> bool:
    """The clinician's alert list (what the dashboard shows) names the alert."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = stack.server
        assert server is not None
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(
                    f"{server.base_url}/api/v1/alerts",
                    params={"patient": stack.alert_patient},
                    headers={"Authorization": f"Bearer {stack.token}"},
                )
            if response.status_code == 200 and response.json()["alerts"]:
                return True
        await asyncio.sleep(0.3)
    return False


async def _clear_alerts(stack: Stack) -> None:
    """Resolve earlier alerts of the alert patient, so each fault's alert is its own."""
    server = stack.server
    assert server is not None
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {stack.token}"}
        listed = await http.get(
            "/api/v1/alerts", params={"patient": stack.alert_patient}, headers=headers
        )
        for alert in listed.json()["alerts"]:
            if alert["status"] != "resolved":
                await http.post(
                    f"/api/v1/alerts/{alert['id']}/resolve",
                    json={"reason": "fault test"},
                    headers=headers,
                )


@dataclass(frozen=True, slots=True)
class Fault:
    """`inject` breaks something; after `hold` seconds `repair` puts it right."""

    name: str
    inject: Callable[[Stack], Awaitable[None]]
    repair: Callable[[Stack], Awaitable[None]]
    hold: float = 2.0


async def run_fault(
    stack: Stack,
    fault: Fault,
    *,
    before: float = 2.0,
    after: float = 3.0,
    interval: float = 0.05,
    http_concurrency: int = 2,
) -> tuple[FaultRow, Ledger]:
    """Load for `before` s, the fault (held `hold` s, an alert raised meanwhile), load for
    `after` s once repaired, then resend what is unacknowledged and count."""
    await _supervise(stack)
    await _clear_alerts(stack)
    stream = AlertStream(stack)
    stream.start()
    ledger = Ledger()
    load = Load(stack, ledger, interval=interval, http_concurrency=http_concurrency)
    load.start()
    await asyncio.sleep(before)
    await fault.inject(stack)
    alert = asyncio.create_task(
        _send_alerting_reading(stack, load.run_id, give_up=START_TIMEOUT + 60)
    )
    await asyncio.sleep(fault.hold)
    repaired = time.monotonic()
    await fault.repair(stack)
    await asyncio.sleep(after)
    await load.stop()
    await alert
    alert_seen = await _alert_listed(stack, timeout=30)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stream.seen.wait(), timeout=10)
    await stream.stop()
    stored = await _settled_store(stack, ledger)
    firsts = ledger.first_ack_after(repaired)
    recovery = (
        None if any(t is None for t in firsts.values()) else max(firsts.values()) - repaired  # type: ignore[type-var,operator]
    )
    mine = {k: n for k, n in stored.items() if k in ledger.sent}
    ledger.lost = sorted(ledger.acknowledged - set(mine))
    row = FaultRow(
        fault=fault.name,
        backend=stack.backend,
        sent=len(ledger.sent),
        acknowledged=len(ledger.acknowledged),
        stored=len(mine),
        lost=len(ledger.acknowledged - set(mine)),
        duplicated=sum(n - 1 for n in mine.values()),
        unexplained=len(ledger.sent - ledger.acknowledged - set(mine) - set(ledger.refusals)),
        refused_attempts=ledger.refused_attempts,
        recovery_seconds=recovery,
        alert_seen=alert_seen,
        alert_streamed=stream.seen.is_set(),
    )
    return row, ledger


async def _supervise(stack: Stack) -> None:
    """Start again any process of the stack that is not running, as systemd would: an
    earlier fault whose repair failed must not become this fault's loss."""
    for process in (stack.server, stack.worker):
        if process is not None and (process.process is None or process.process.poll() is not None):
            await asyncio.to_thread(process.start, START_TIMEOUT)


async def _settled_store(
    stack: Stack, ledger: Ledger, timeout: float = 60.0
) -> Counter[tuple[str, str]]:
    """The stored rows once every acknowledged reading is in (the MQTT worker may still be
    working through the broker's backlog), or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await stack.stored()
        if ledger.acknowledged <= set(stored) or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.3)
