"""A simulated device that publishes readings over MQTT 5 at QoS 1 with its own broker login,
reports its status (online, battery, firmware), and leaves a last will so it is seen to go
offline when its connection drops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import aiomqtt

from medmesh.sim.models import PatientModel

log = logging.getLogger(__name__)

# The platform's topic layout (medmesh.ingest.mqtt); repeated here because the simulator talks
# to the platform only over its protocols.
TOPIC_ROOT = "medmesh/v1/devices"
OFFLINE = b'{"online":false}'


def readings_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/readings"


def status_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/status"


@dataclass(frozen=True, slots=True)
class MqttDeviceSettings:
    """How a device reaches the broker: user name = device id, its own password, optional TLS."""

    device_id: str
    password: str | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    ca_file: str | None = None  # verify the broker's certificate against this CA (enables TLS)
    firmware: str = "1.0.0"
    battery: float = 100.0  # percent when switched on
    drain_per_hour: float = 0.5  # percent of battery used per hour of operation
    status_every: float = 60.0  # seconds between status reports
    keepalive: int = 30  # seconds; the broker declares the device gone after 1.5x this
    timeout: float = 10.0  # seconds to wait for a PUBACK


class MqttDevice:
    """An async context manager: connected inside, offline (and saying so) outside.

    `send` returns once the broker has acknowledged the message (PUBACK); whether the platform
    stored the readings is for the platform to tell (FHIR API, dead letters). The device does not
    reconnect by itself: a publish on a lost connection raises aiomqtt.MqttError.
    """

    def __init__(
        self, settings: MqttDeviceSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._switched_on = clock()
        self._stack = contextlib.AsyncExitStack()
        self._client: aiomqtt.Client | None = None
        self._status_task: asyncio.Task[None] | None = None

    def _new_client(self) -> aiomqtt.Client:
        s = self.settings
        tls = aiomqtt.TLSParameters(ca_certs=s.ca_file) if s.ca_file else None
        will = aiomqtt.Will(status_topic(s.device_id), OFFLINE, qos=1, retain=True)
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.device_id,
            username=s.device_id,
            password=s.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=s.keepalive,
            timeout=s.timeout,
            tls_params=tls,
        )

    async def __aenter__(self) -> Self:
        self._switched_on = self._clock()
        try:
            self._client = await self._stack.enter_async_context(self._new_client())
            await self.report_status()
        except BaseException:
            self._client = None
            await self._stack.aclose()
            raise
        self._status_task = asyncio.create_task(self._report_periodically())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        try:
            # A clean DISCONNECT discards the last will, so say it ourselves.
            with contextlib.suppress(aiomqtt.MqttError):
                await self._publish(status_topic(self.settings.device_id), OFFLINE, retain=True)
        finally:
            self._client = None
            await self._stack.aclose()

    def battery(self) -> float:
        """The charge left, in percent: draining slowly while switched on."""
        hours = (self._clock() - self._switched_on) / 3600
        return round(max(0.0, self.settings.battery - self.settings.drain_per_hour * hours), 1)

    async def _publish(self, topic: str, body: bytes, *, retain: bool = False) -> None:
        if self._client is None:
            raise RuntimeError("the device is not connected; use it as `async with`")
        await self._client.publish(topic, body, qos=1, retain=retain)

    async def report_status(self) -> None:
        """Publish {"online": true, "battery": …, "firmware": …}, retained for late subscribers."""
        status = {"online": True, "battery": self.battery(), "firmware": self.settings.firmware}
        body = json.dumps(status, separators=(",", ":")).encode()
        await self._publish(status_topic(self.settings.device_id), body, retain=True)

    async def _report_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_every)
            try:
                await self.report_status()
            except aiomqtt.MqttError as exc:
                log.info("status report not delivered (%s)", type(exc).__name__)

    async def publish(self, body: bytes) -> None:
        """Publish a readings body as it is (e.g. a faulty device's); return after the PUBACK."""
        await self._publish(readings_topic(self.settings.device_id), body)

    async def send(self, readings: Sequence[dict[str, Any]]) -> None:
        """Publish a native-format batch; return after the broker's PUBACK."""
        await self.publish(json.dumps({"readings": list(readings)}).encode())

    async def stream(
        self,
        model: PatientModel,
        *,
        interval: float = 60.0,
        backfill: timedelta = timedelta(0),
        batch_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Send `model`'s history for `backfill`, then what it measures every `interval`
        seconds, until cancelled. Message ids come from sample times, so overlaps are harmless."""
        since = clock() - backfill
        while True:
            now = clock()
            readings = model.readings_between(since, now)
            for start in range(0, len(readings), batch_size):
                await self.publish(model.encode(readings[start : start + batch_size]))
            since = now
            await asyncio.sleep(interval)
