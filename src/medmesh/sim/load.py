"""Load mode: N simulated devices send readings at a chosen total rate for a bounded time, over
HTTP or MQTT, and the achieved throughput is reported.

What counts as acknowledged differs by transport. HTTP: the readings a 202 receipt reports as
accepted or duplicate (the platform has committed them). MQTT: the readings in messages the
broker acknowledged with a PUBACK; whether the platform stored them must be checked on the
platform side (FHIR search, dead letters, ingest-worker metrics).

Readings carry simulated times from `history_needed(plan)` ago up to now: the devices must be
assigned to a patient from before then, or the platform refuses the readings (no patient).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx

from medmesh.sim.faults import BadDevice
from medmesh.sim.models import PatientModel, StablePatient
from medmesh.sim.mqtt_device import MqttDevice, MqttDeviceSettings

GRACE_SECONDS = 10.0  # how long a request in flight at the deadline may still take
# A send returns (acknowledged, rejected) reading counts, or raises.
Send = Callable[[bytes, int], Awaitable[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """A provisioned device: its id and its secret (HTTP bearer secret or broker password)."""

    device_id: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How much to send: `rate` readings/s over all devices, for at most `duration` seconds and
    at most `max_readings` readings (default rate × duration), in batches of `batch_size`."""

    devices: Sequence[DeviceLogin]
    rate: float
    duration: float
    batch_size: int = 50
    max_readings: int | None = None
    garbage: float = 0.0  # fraction of readings a faulty device spoils (dead-letter path)
    seed: int = 0
    run_id: str = field(default_factory=lambda: f"load{int(time.time())}")

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("a load run needs at least one device")
        if self.rate <= 0 or self.duration <= 0 or self.batch_size < 1:
            raise ValueError("rate, duration and batch size must be positive")

    @property
    def total(self) -> int:
        budget = math.ceil(self.rate * self.duration)
        return budget if self.max_readings is None else min(budget, self.max_readings)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a load run achieved; `errors` counts failed requests or publishes (and devices that
    could not connect)."""

    transport: str
    planned: int
    sent: int
    acknowledged: int
    rejected: int
    errors: int
    elapsed: float
    error_kinds: tuple[str, ...] = ()

    @property
    def readings_per_second(self) -> float:
        return self.acknowledged / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        kinds = f" ({', '.join(self.error_kinds)})" if self.error_kinds else ""
        return (
            f"{self.transport}: sent {self.sent} of {self.planned} planned, "
            f"acknowledged {self.acknowledged}, "
            f"rejected {self.rejected}, errors {self.errors}{kinds} in {self.elapsed:.1f} s "
            f"= {self.readings_per_second:.0f} readings/s acknowledged"
        )


def _model(plan: LoadPlan, index: int) -> PatientModel:
    patient = StablePatient(f"load-{index}", seed=plan.seed * 100_003 + index)
    return BadDevice(patient, plan.garbage, seed=plan.seed) if plan.garbage > 0 else patient


def history_needed(plan: LoadPlan) -> timedelta:
    """How far back the readings of a run reach: assign the devices from before now minus this."""
    per_device = math.ceil(plan.total / len(plan.devices)) + plan.batch_size
    days = per_device / _model(plan, 0).readings_per_day()
    return timedelta(days=days * 1.1) + timedelta(minutes=10)


def _readings(model: PatientModel, start: datetime, run_id: str) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    while start < now:
        end = min(start + timedelta(hours=1), now)
        for reading in model.readings_between(start, end):
            yield {**reading, "id": f"{run_id}-{reading['id']}"}
        start = end


def check_loopback(host: str, allow_remote: bool) -> None:
    """Refuse to aim load anywhere but this machine unless explicitly allowed."""
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load targets only 127.0.0.1/localhost, not {host!r} (allow_remote)")


async def _drive(plan: LoadPlan, transport: str, senders: Sequence[Send | None]) -> LoadReport:
    """Send the plan's batches round-robin over the devices at the planned rate."""
    loop = asyncio.get_running_loop()
    total, size = plan.total, plan.batch_size
    batches, interval = math.ceil(total / size), size / plan.rate
    start_time = datetime.now(UTC) - history_needed(plan)
    counts = {"sent": 0, "acknowledged": 0, "rejected": 0, "errors": 0}
    kinds: set[str] = set()
    began = loop.time()
    deadline = began + plan.duration

    async def device(index: int, send: Send) -> None:
        model = _model(plan, index)
        stream = _readings(model, start_time, plan.run_id)
        for number in range(index, batches, len(senders)):
            due = began + number * interval
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() >= deadline:
                return
            wanted = min(size, total - number * size)
            batch = [reading for _, reading in zip(range(wanted), stream, strict=False)]
            if not batch:  # history exhausted: never send readings from the future
                return
            counts["sent"] += len(batch)
            try:
                async with asyncio.timeout(deadline - loop.time() + GRACE_SECONDS):
                    acknowledged, rejected = await send(model.encode(batch), len(batch))
            except (httpx.HTTPError, aiomqtt.MqttError, OSError, TimeoutError, ValueError) as exc:
                counts["errors"] += 1
                kinds.add(type(exc).__name__)
                continue
            counts["acknowledged"] += acknowledged
            counts["rejected"] += rejected

    tasks = [device(i, send) for i, send in enumerate(senders) if send is not None]
    await asyncio.gather(*tasks)
    return LoadReport(
        transport,
        total,
        counts["sent"],
        counts["acknowledged"],
        counts["rejected"],
        counts["errors"] + sum(send is None for send in senders),
        loop.time() - began,
        tuple(sorted(kinds)),
    )


async def run_http_load(base_url: str, plan: LoadPlan, *, allow_remote: bool = False) -> LoadReport:
    """Drive the plan against POST {base_url}/ingest/v1/readings (device bearer secrets)."""
    check_loopback(httpx.URL(base_url).host, allow_remote)
    limits = httpx.Limits(max_connections=len(plan.devices))
    async with httpx.AsyncClient(
        base_url=base_url, timeout=GRACE_SECONDS, limits=limits, trust_env=False
    ) as client:

        def sender(login: DeviceLogin) -> Send:
            headers = {
                "Authorization": f"Bearer {login.secret}",
                "Content-Type": "application/json",
            }

            async def send(body: bytes, count: int) -> tuple[int, int]:
                response = await client.post("/ingest/v1/readings", content=body, headers=headers)
                if response.status_code == 400:  # refused whole (e.g. malformed JSON)
                    return 0, count
                if response.status_code != 202:
                    response.raise_for_status()
                    raise httpx.HTTPError(f"unexpected status {response.status_code}")
                receipt = response.json()
                return receipt["accepted"] + receipt["duplicates"], len(receipt["rejected"])

            return send

        return await _drive(plan, "http", [sender(login) for login in plan.devices])


async def run_mqtt_load(
    plan: LoadPlan,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    ca_file: str | None = None,
    allow_remote: bool = False,
) -> LoadReport:
    """Drive the plan as MQTT devices (user name = device id, password = secret), QoS 1."""
    check_loopback(host, allow_remote)
    devices = [
        MqttDevice(MqttDeviceSettings(d.device_id, d.secret, host, port, ca_file))
        for d in plan.devices
    ]

    async def connect(device: MqttDevice) -> Send | None:
        try:
            async with asyncio.timeout(GRACE_SECONDS):
                await device.__aenter__()
        except (aiomqtt.MqttError, OSError, TimeoutError):
            return None

        async def send(body: bytes, count: int) -> tuple[int, int]:
            await device.publish(body)
            return count, 0

        return send

    senders = await asyncio.gather(*(connect(d) for d in devices))
    try:
        return await _drive(plan, "mqtt", senders)
    finally:
        for device, send in zip(devices, senders, strict=True):
            if send is not None:
                await device.__aexit__(None, None, None)
