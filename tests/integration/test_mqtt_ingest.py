"""MQTT ingest through a real Mosquitto broker, with the shipped ACL and per-device logins."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from medmesh.access.identity.credentials import new_secret
from medmesh.config import Settings
from medmesh.ingest.mqtt import MqttIngest, MqttSettings
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.services import build_formats
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetters
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.schema import dead_letters, observations
from tests.conftest import World, make_world
from tests.helpers import minute_series, reading
from tests.mosquitto_broker import INGEST_USER, Broker

StartBroker = Callable[[dict[str, str]], Broker]


def topic(device_id: str, kind: str = "readings") -> str:
    return f"medmesh/v1/devices/{device_id}/{kind}"


def device_client(
    broker: Broker, username: str, password: str, *, tls: bool = False, will: bool = False
) -> paho.Client:
    """A device's MQTT 5 connection, made with paho-mqtt (as device firmware or a gateway
    written in Python would)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
    )
    client.username_pw_set(username, password)
    if will:
        client.will_set(topic(username, "status"), b'{"online": false}', qos=1, retain=True)
    if tls:
        client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.connect("127.0.0.1", broker.tls_port if tls else broker.port)
    client.loop_start()
    return client


def publish(client: paho.Client, topic_name: str, payload: Any) -> paho.MQTTMessageInfo:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    info = client.publish(topic_name, body, qos=1)
    info.wait_for_publish(timeout=5)
    return info


async def stored_count(database: Database, table=observations) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def wait_for(
    database: Database, expected: int, table=observations, timeout: float = 10.0
) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    count = await stored_count(database, table)
    while count < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        count = await stored_count(database, table)
    return count


class Platform:
    """A provisioned device with broker credentials, plus the ingest worker's login."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.device_password = new_secret("mqp")
        self.ingest_password = new_secret("mqp")

    @property
    def users(self) -> dict[str, str]:
        return {self.world.device_id: self.device_password, INGEST_USER: self.ingest_password}


@contextlib.asynccontextmanager
async def running_ingest(
    database_url: str, broker: Broker, password: str, *, tls: bool = False
) -> AsyncIterator[MqttIngest]:
    database = Database(database_url)
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.tls_port if tls else broker.port,
        username=INGEST_USER,
        password=password,
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        ca_file=broker.ca_file if tls else None,
    )
    formats = build_formats(Settings(database_url=database_url))
    ingest = MqttIngest(settings, database, IngestPipeline(database), formats)
    task = asyncio.create_task(ingest.run())
    try:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        yield ingest
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await database.dispose()


async def test_reading_published_by_a_device_is_stored(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    broker = start_broker(platform.users)
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, world.device_id, platform.device_password)
        info = publish(device, topic(world.device_id), {"readings": minute_series(5)})
        assert info.is_published()
        assert await wait_for(database, 5) == 5
        device.disconnect()


async def test_mosquitto_pub_can_send_readings(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    broker = start_broker(platform.users)
    body = orjson.dumps({"readings": [reading("cli-1"), reading("cli-2", value=75)]})
    async with running_ingest(database_url, broker, platform.ingest_password):
        result = await asyncio.to_thread(
            subprocess.run,
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-u",
                world.device_id,
                "-P",
                platform.device_password,
                "-t",
                topic(world.device_id),
                "-m",
                body.decode(),
            ],
            capture_output=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        assert await wait_for(database, 2) == 2


async def test_a_device_cannot_publish_on_another_devices_topic(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    victim = await make_world(database, identifier="MRN-VICTIM")
    broker = start_broker(platform.users)
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, world.device_id, platform.device_password)
        publish(device, topic(victim.device_id), {"readings": [reading("forged")]})
        publish(device, topic(world.device_id), {"readings": [reading("own")]})
        assert await wait_for(database, 1) == 1
        await asyncio.sleep(0.3)
        device.disconnect()
    async with database.read() as conn:
        owners = (await conn.execute(select(observations.c.device_id))).scalars().all()
    assert owners == [world.device_id]  # the broker's ACL dropped the forged message


async def test_a_body_naming_another_device_is_dead_lettered(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    # Defence in depth for brokers without the ACL: the body names its sender.
    platform = Platform(world)
    broker = start_broker(platform.users)
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, world.device_id, platform.device_password)
        publish(
            device, topic(world.device_id), {"device": "someone-else", "readings": [reading("x")]}
        )
        assert await wait_for(database, 1, dead_letters) == 1
        device.disconnect()
    async with database.read() as conn:
        (letter,) = await DeadLetters(conn).for_device(world.device_id)
    assert (letter.channel, letter.reason) == ("mqtt", "device-mismatch")
    assert await stored_count(database) == 0


async def test_malformed_payloads_and_unknown_devices_are_dead_lettered(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    ghost = str(uuid.uuid4())  # has broker credentials but is not a registered device
    users = {**platform.users, ghost: "ghost-password"}
    broker = start_broker(users)
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, world.device_id, platform.device_password)
        publish(device, topic(world.device_id), b"\x00not json")
        publish(device, topic(world.device_id), {"readings": [reading("bad", value=900)]})
        publish(device, topic(world.device_id, "readings/klingon"), {"readings": []})
        intruder = device_client(broker, ghost, "ghost-password")
        publish(intruder, topic(ghost), {"readings": [reading("g")]})
        assert await wait_for(database, 4, dead_letters) == 4
        device.disconnect()
        intruder.disconnect()
    async with database.read() as conn:
        rows = (await conn.execute(select(dead_letters.c.device_id, dead_letters.c.reason))).all()
    assert sorted(rows, key=str) == sorted(
        [
            (world.device_id, "malformed-body"),
            (world.device_id, "implausible-value"),
            (world.device_id, "unknown-format"),
            (ghost, "unknown-device"),
        ],
        key=str,
    )
    assert await stored_count(database) == 0


async def test_status_and_last_will_are_recorded_and_shown_on_the_fhir_device(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    broker = start_broker(platform.users)
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, world.device_id, platform.device_password, will=True)
        publish(
            device,
            topic(world.device_id, "status"),
            {"online": True, "battery": 81, "firmware": "2.4.1"},
        )
        deadline = asyncio.get_running_loop().time() + 10
        status = None
        while status is None and asyncio.get_running_loop().time() < deadline:
            async with database.read() as conn:
                status = await DeviceStatuses(conn).get(world.device_id)
            await asyncio.sleep(0.05)
        assert status is not None
        assert (status.online, status.battery_percent, status.firmware) == (True, 81.0, "2.4.1")
        seen = status.last_seen

        device.socket().close()  # connection lost without DISCONNECT: the broker sends the will
        device.loop_stop()
        while status.online and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            async with database.read() as conn:
                status = await DeviceStatuses(conn).get(world.device_id)
            assert status is not None
    assert status.online is False
    assert status.battery_percent == 81.0  # a will that says only "offline" keeps the rest
    assert status.last_seen == seen  # going offline is not a sign of life


async def test_tls_connection_verifies_the_broker_and_delivers(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    broker = start_broker(platform.users)
    async with running_ingest(database_url, broker, platform.ingest_password, tls=True) as ingest:
        assert ingest.connected.is_set()
        device = device_client(broker, world.device_id, platform.device_password, tls=True)
        publish(device, topic(world.device_id), {"readings": [reading("over-tls")]})
        assert await wait_for(database, 1) == 1
        device.disconnect()
    untrusted = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    untrusted.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # system CAs do not know the dev CA
    with pytest.raises(ssl.SSLError):
        untrusted.connect("127.0.0.1", broker.tls_port)


async def test_wrong_password_is_refused_by_the_broker(
    world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    broker = start_broker(platform.users)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set(world.device_id, "not-the-password")
    refused: list[Any] = []
    client.on_connect = lambda c, u, f, reason, p: refused.append(reason)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for _ in range(50):
        if refused:
            break
        await asyncio.sleep(0.05)
    client.loop_stop()
    assert refused and refused[0].is_failure


async def test_a_message_the_database_refuses_does_not_block_the_others(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("uses a PostgreSQL trigger to make the database refuse one row")
    from sqlalchemy import text

    async with database.write() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.message_id = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON observations "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        )
    platform = Platform(world)
    broker = start_broker(platform.users)
    try:
        async with running_ingest(database_url, broker, platform.ingest_password):
            device = device_client(broker, world.device_id, platform.device_password)
            publish(device, topic(world.device_id), {"readings": [reading("good-1")]})
            publish(device, topic(world.device_id), {"readings": [reading("poison")]})
            publish(device, topic(world.device_id), {"readings": [reading("good-2", value=80)]})
            assert await wait_for(database, 2) == 2
            assert await wait_for(database, 1, dead_letters) == 1
            device.disconnect()
        async with database.read() as conn:
            reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
        assert reasons == ["storage-error"]
    finally:
        async with database.write() as conn:
            await conn.execute(text("DROP TRIGGER refuse_poison ON observations"))
            await conn.execute(text("DROP FUNCTION refuse_poison()"))


async def test_an_overlong_device_id_in_the_topic_is_dead_lettered(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    platform = Platform(world)
    long_user = "d" * 60
    broker = start_broker({**platform.users, long_user: "pw"})
    async with running_ingest(database_url, broker, platform.ingest_password):
        device = device_client(broker, long_user, "pw")
        publish(device, topic(long_user), {"readings": [reading("x")]})
        assert await wait_for(database, 1, dead_letters) == 1
        device.disconnect()
    async with database.read() as conn:
        rows = (await conn.execute(select(dead_letters.c.device_id, dead_letters.c.reason))).all()
    assert rows == [(None, "unknown-topic")]
