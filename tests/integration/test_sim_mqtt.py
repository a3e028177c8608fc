"""The simulated MQTT device against the real local Mosquitto: readings at QoS 1, a retained
status, and a last will the broker publishes when the device drops off without saying goodbye.

Mosquitto must listen on MEDMESH_TEST_MQTT_HOST:PORT (default 127.0.0.1:1883, anonymous allowed);
where it does not, these tests skip, except in CI (CI set), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from medmesh.sim.load import DeviceLogin, LoadPlan, check_loopback, run_mqtt_load
from medmesh.sim.models import StablePatient
from medmesh.sim.mqtt_device import MqttDevice, MqttDeviceSettings, status_topic

HOST = os.environ.get("MEDMESH_TEST_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("MEDMESH_TEST_MQTT_PORT", "1883"))
IN_CI = bool(os.environ.get("CI"))
START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)

# Run in a child process so the test can kill it: the connection then ends without DISCONNECT.
DEVICE_SCRIPT = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from medmesh.sim.load import DeviceLogin, LoadPlan, check_loopback, run_mqtt_load
from medmesh.sim.models import StablePatient
from medmesh.sim.mqtt_device import MqttDevice, MqttDeviceSettings

async def main() -> None:
    settings = MqttDeviceSettings(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]))
    async with MqttDevice(settings) as device:
        start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        await device.send(StablePatient("p").readings_between(start, start + timedelta(minutes=5)))
        print("sent", flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def broker() -> tuple[str, int]:
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        message = f"Mosquitto is not reachable at {HOST}:{PORT} ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it")
        pytest.skip(message)
    return HOST, PORT


@pytest.fixture
async def device_id(broker: tuple[str, int]) -> AsyncIterator[str]:
    """A fresh device id; its retained status is cleared afterwards."""
    device = f"sim-test-{uuid.uuid4().hex[:12]}"
    yield device
    async with aiomqtt.Client(*broker) as client:
        await client.publish(status_topic(device), b"", qos=1, retain=True)


async def collect(
    client: aiomqtt.Client, device: str, until: Any, timeout: float = 10
) -> list[aiomqtt.Message]:
    """Messages about `device` until `until(messages)` holds."""
    seen: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if message.topic.value.split("/")[3] == device:
                seen.append(message)
                if until(seen):
                    return seen
    return seen


def body(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


def kind(message: aiomqtt.Message) -> str:
    return message.topic.value.split("/")[4]


async def test_device_publishes_readings_and_a_retained_status(
    broker: tuple[str, int], device_id: str
) -> None:
    readings = StablePatient("p", seed=1).readings_between(START, START + timedelta(minutes=10))
    async with aiomqtt.Client(*broker, protocol=aiomqtt.ProtocolVersion.V5) as watcher:
        await watcher.subscribe("medmesh/v1/devices/+/#", qos=1)
        settings = MqttDeviceSettings(device_id, host=broker[0], port=broker[1], firmware="2.4.1")
        async with MqttDevice(settings) as device:
            await device.send(readings)
            seen = await collect(
                watcher, device_id, lambda s: any(kind(m) == "readings" for m in s)
            )
            # A late subscriber learns the device's state from the retained status.
            async with aiomqtt.Client(*broker) as late:
                await late.subscribe(status_topic(device_id), qos=1)
                (retained,) = await collect(late, device_id, lambda s: True)

    (status, published) = [m for m in seen if kind(m) in ("status", "readings")][:2]
    assert kind(status) == "status"
    assert body(status) == {"online": True, "battery": 100.0, "firmware": "2.4.1"}
    assert kind(published) == "readings"
    assert published.qos == 1
    assert body(published) == {"readings": readings}
    assert retained.retain
    assert body(retained)["online"] is True


async def test_device_that_leaves_cleanly_says_it_is_offline(
    broker: tuple[str, int], device_id: str
) -> None:
    async with MqttDevice(MqttDeviceSettings(device_id, host=broker[0], port=broker[1])):
        pass
    async with aiomqtt.Client(*broker) as late:
        await late.subscribe(status_topic(device_id), qos=1)
        (retained,) = await collect(late, device_id, lambda s: True)
    assert body(retained) == {"online": False}


async def test_broker_publishes_the_last_will_when_the_device_drops_off(
    broker: tuple[str, int], device_id: str
) -> None:
    async with aiomqtt.Client(*broker, protocol=aiomqtt.ProtocolVersion.V5) as watcher:
        await watcher.subscribe("medmesh/v1/devices/+/#", qos=1)
        child = subprocess.Popen(
            [sys.executable, "-c", DEVICE_SCRIPT, device_id, broker[0], str(broker[1])],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
            assert line.strip() == "sent"
            before = await collect(
                watcher, device_id, lambda s: {"status", "readings"} <= {kind(m) for m in s}
            )
            child.kill()  # the socket closes without an MQTT DISCONNECT
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        (will,) = await collect(watcher, device_id, lambda s: True)

    assert body(next(m for m in before if kind(m) == "status"))["online"] is True
    assert kind(will) == "status"
    assert body(will) == {"online": False}
    async with aiomqtt.Client(*broker) as late:  # and it stays the device's retained status
        await late.subscribe(status_topic(device_id), qos=1)
        (retained,) = await collect(late, device_id, lambda s: True)
    assert retained.retain
    assert body(retained) == {"online": False}


async def test_mqtt_load_sends_the_planned_readings_at_the_planned_rate(
    broker: tuple[str, int],
) -> None:
    run = uuid.uuid4().hex[:8]
    logins = [DeviceLogin(f"sim-load-{run}-{i}") for i in range(4)]
    plan = LoadPlan(logins, rate=400, duration=1.0, batch_size=20, run_id=run)
    async with aiomqtt.Client(*broker, protocol=aiomqtt.ProtocolVersion.V5) as watcher:
        await watcher.subscribe("medmesh/v1/devices/+/readings", qos=1)
        report = await run_mqtt_load(plan, host=broker[0], port=broker[1])
        received = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for message in watcher.messages:
                    if message.topic.value.split("/")[3].startswith(f"sim-load-{run}-"):
                        received += len(body(message)["readings"])
                        if received >= 400:
                            break
    async with aiomqtt.Client(*broker) as client:  # leave no retained statuses behind
        for login in logins:
            await client.publish(status_topic(login.device_id), b"", qos=1, retain=True)

    assert (report.sent, report.acknowledged, report.errors) == (400, 400, 0)
    assert received == 400
    assert 0.9 <= report.elapsed < 3
    assert report.readings_per_second > 130


def test_load_refuses_to_aim_at_another_machine() -> None:
    check_loopback("127.0.0.1", allow_remote=False)
    check_loopback("::1", allow_remote=False)
    check_loopback("localhost", allow_remote=False)
    with pytest.raises(ValueError, match="load targets only"):
        check_loopback("10.1.2.3", allow_remote=False)
    with pytest.raises(ValueError, match="load targets only"):
        check_loopback("example.org", allow_remote=False)
    check_loopback("example.org", allow_remote=True)
