"""Ingest workers as real processes: a worker killed between receiving a message and
committing it loses nothing (the broker redelivers, the dedupe keeps it single), and two
workers share the load through an MQTT 5 shared subscription."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from medmesh import provisioning
from medmesh.access.identity.credentials import new_secret
from medmesh.store.database import Database
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import minute_series, reading
from tests.integration.test_mqtt_ingest import (
    device_client,
    publish,
    stored_count,
    topic,
    wait_for,
)
from tests.mosquitto_broker import INGEST_USER, Broker

StartBroker = Callable[[dict[str, str]], Broker]


class Worker:
    """`medmesh ingest-worker` in a child process."""

    def __init__(self, database_url: str, broker: Broker, password: str, client_id: str, log: Path):
        self.env = {
            **os.environ,
            "MEDMESH_DATABASE_URL": database_url,
            "MEDMESH_MQTT_HOST": "127.0.0.1",
            "MEDMESH_MQTT_PORT": str(broker.port),
            "MEDMESH_MQTT_USERNAME": INGEST_USER,
            "MEDMESH_MQTT_PASSWORD": password,
            "MEDMESH_MQTT_SHARED_GROUP": "medmesh-ingest",
        }
        self.client_id = client_id
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:  # a loaded machine imports slowly
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "medmesh", "ingest-worker", "--client-id", self.client_id],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"subscribed" in self.log.read_bytes()[offset:]:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()  # not left running after the test
        raise RuntimeError(f"worker did not subscribe; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@asynccontextmanager
async def writes_blocked(database_url: str) -> AsyncIterator[None]:
    """Hold the database's write lock from outside, as a slow disk or a long transaction
    would: a worker that received a message now waits in its transaction, uncommitted."""
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        conn = sqlite3.connect(str(url.database), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        await pg.execute("BEGIN")
        await pg.execute("LOCK TABLE observations IN EXCLUSIVE MODE")
        yield
    finally:
        await pg.execute("ROLLBACK")
        await pg.close()


@pytest.fixture
def credentials(world: World) -> dict[str, str]:
    return {world.device_id: new_secret("mqp"), INGEST_USER: new_secret("mqp")}


async def test_worker_killed_before_commit_loses_nothing_and_stores_once(
    database_url: str,
    database: Database,
    world: World,
    start_broker: StartBroker,
    credentials: dict[str, str],
    tmp_path: Path,
) -> None:
    broker = start_broker(credentials)
    worker = Worker(database_url, broker, credentials[INGEST_USER], "worker-a", tmp_path / "w.log")
    await asyncio.to_thread(worker.start)
    try:
        device = device_client(broker, world.device_id, credentials[world.device_id])
        async with writes_blocked(database_url):
            publish(device, topic(world.device_id), {"readings": [reading("only-once")]})
            await asyncio.sleep(1.0)  # the worker has it, and is waiting to commit
            worker.kill()
        assert await stored_count(database) == 0  # nothing was committed…
        await asyncio.to_thread(worker.start)  # …and the same session picks it up again
        assert await wait_for(database, 1) == 1
        # The device also resends (it never learnt the outcome): still one reading.
        publish(device, topic(world.device_id), {"readings": [reading("only-once")]})
        await asyncio.sleep(1.0)
        assert await stored_count(database) == 1
        device.disconnect()
    finally:
        worker.stop()


async def test_two_workers_share_the_load_and_store_each_reading_once(
    database_url: str,
    database: Database,
    world: World,
    start_broker: StartBroker,
    credentials: dict[str, str],
    tmp_path: Path,
) -> None:
    others = [await provisioning.register_device(database, display_name=f"d{i}") for i in range(3)]
    for other in others:
        await provisioning.assign_device(
            database, other.device_id, world.patient_id, ASSIGNED_SINCE
        )
    users = {**credentials, **{o.device_id: "pw-" + o.device_id for o in others}}
    broker = start_broker(users)
    password = credentials[INGEST_USER]
    workers = [
        Worker(database_url, broker, password, f"worker-{n}", tmp_path / f"w{n}.log")
        for n in range(2)
    ]
    await asyncio.gather(*(asyncio.to_thread(w.start) for w in workers))
    try:
        senders = [device_client(broker, world.device_id, credentials[world.device_id])]
        senders += [device_client(broker, o.device_id, "pw-" + o.device_id) for o in others]
        device_ids = [world.device_id] + [o.device_id for o in others]
        for n in range(50):
            for sender, device_id in zip(senders, device_ids, strict=True):
                batch = minute_series(4, prefix=f"{n}")
                sender.publish(topic(device_id), orjson.dumps({"readings": batch}), qos=1)
        assert await wait_for(database, 4 * 50 * 4, timeout=30) == 800
        await asyncio.sleep(0.5)
        assert await stored_count(database) == 800
        for sender in senders:
            sender.disconnect()
    finally:
        for worker in workers:
            worker.stop()
    # Both took part: each says how many messages it stored when it stops.
    counts = [
        int(re.findall(r"stopped after (\d+) messages", w.log.read_text())[-1]) for w in workers
    ]
    assert sum(counts) == 200
    assert min(counts) > 0
