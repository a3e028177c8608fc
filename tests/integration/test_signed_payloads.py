"""Signed device payloads (docs/signed-payloads.md), on both backends: over real HTTP to a live
server and over MQTT through a private Mosquitto, signed with the reference implementation that
the doc itself carries."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.cli import app
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetters
from medmesh.store.device_keys import DeviceSigningKey, DeviceSigningKeys
from medmesh.store.schema import dead_letters, devices, observations
from tests.conftest import World
from tests.helpers import BASE_TIME, reading
from tests.integration.test_mllp import VITALS, Peer, msa, oru
from tests.integration.test_mqtt_ingest import (
    Platform,
    StartBroker,
    device_client,
    publish,
    running_ingest,
    stored_count,
    topic,
    wait_for,
)
from tests.live_server import live_server

DOC = Path(__file__).parents[2] / "docs" / "signed-payloads.md"


def reference() -> Any:
    """The Python reference implementation, run from the doc's own code block."""
    text = DOC.read_text()
    section = text[text.index("## Reference implementation (Python)") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)
    return SimpleNamespace(**namespace)


REF = reference()


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def raw_base64(key: Ed25519PrivateKey) -> bytes:
    return base64.b64encode(key.public_key().public_bytes_raw())


def batch(*ids: str) -> bytes:
    return orjson.dumps({"readings": [reading(i) for i in ids]})


def diagnostics(response: httpx.Response) -> str:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


async def test_signed_http_readings_are_checked_before_anything_is_stored(
    database_url: str,
    database: Database,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "device.pub").write_bytes(pem(key))
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["device", "signing-key", world.device_id, str(tmp_path / "device.pub")],
    )
    assert result.exit_code == 0, result.output
    assert REF.key_id(key) in result.output
    # The organisation's policy: every device must sign.
    env = {"MEDMESH_REQUIRE_SIGNED_READINGS": "true", "MEDMESH_SIGNATURE_MAX_SKEW_SECONDS": "120"}
    with live_server(database_url, tmp_path / "server.log", env=env) as server:
        url = f"{server.base_url}/ingest/v1/readings"
        auth = {**world.device_headers, "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as http:

            async def send(body: bytes, signature: str | None) -> httpx.Response:
                headers = dict(auth)
                if signature is not None:
                    headers["Medmesh-Signature"] = signature
                return await http.post(url, content=body, headers=headers)

            body = batch("good-1")
            signature = REF.signature_header(key, world.device_id, body)
            good = await send(body, signature)
            assert good.status_code == 202, good.text
            assert good.json()["accepted"] == 1

            refusals = {
                "altered body": (batch("altered-1"), signature, 401, "signature-invalid"),
                "wrong key": (
                    batch("wrong-1"),
                    REF.signature_header(Ed25519PrivateKey.generate(), world.device_id, b"x"),
                    401,
                    "signature-key-unknown",
                ),
                "replayed nonce": (body, signature, 401, "signature-replayed"),
                "stale timestamp": (
                    batch("stale-1"),
                    REF.signature_header(key, world.device_id, batch("stale-1"), time.time() - 600),
                    401,
                    "signature-stale",
                ),
                "future timestamp": (
                    batch("future-1"),
                    REF.signature_header(
                        key, world.device_id, batch("future-1"), time.time() + 600
                    ),
                    401,
                    "signature-from-future",
                ),
                "missing signature": (batch("unsigned-1"), None, 401, "signature-required"),
                "malformed header": (
                    batch("bad-1"),
                    "keyid=zz, ts=now",
                    400,
                    "signature-malformed",
                ),
            }
            for case, (sent, header, status, reason) in refusals.items():
                response = await send(sent, header)
                assert response.status_code == status, (case, response.text)
                assert diagnostics(response).startswith(reason), case

            # The right key, signing for another device, proves nothing for this one.
            other = REF.signature_header(key, "another-device", batch("x-1"))
            forged = await send(batch("x-1"), other)
            assert forged.status_code == 401
            assert diagnostics(forged).startswith("signature-invalid")

            # A signature made by a different key with this device's key id is refused too.
            impostor = Ed25519PrivateKey.generate()
            body_i = batch("imp-1")
            sig = REF.signature_header(impostor, world.device_id, body_i)
            sig = re.sub(r"keyid=[0-9a-f]+", f"keyid={REF.key_id(key)}", sig)
            refused = await send(body_i, sig)
            assert diagnostics(refused).startswith("signature-invalid")

    assert await stored_count(database) == 1
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(world.device_id)
    assert letters == []  # an HTTP device has its answer; nothing of a refusal is kept


async def test_a_signing_key_changed_elsewhere_decides_the_next_request(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    """The server remembers each device's signing key (ingest/known_signing_keys.py); keys set,
    replaced or made optional in another process (here: straight in the database) decide the
    very next request all the same."""
    headers = {**world.device_headers, "Content-Type": "application/json"}

    async def send(body: bytes, key: Ed25519PrivateKey | None = None) -> httpx.Response:
        signed = dict(headers)
        if key is not None:
            signed["Medmesh-Signature"] = REF.signature_header(key, world.device_id, body)
        return await client.post("/ingest/v1/readings", content=body, headers=signed)

    # No key yet: unsigned readings are accepted, and the server has read that there is none.
    assert (await send(batch("before-1"))).status_code == 202
    first = Ed25519PrivateKey.generate()
    await provisioning.set_signing_key(database, world.device_id, raw_base64(first), required=True)
    unsigned = await send(batch("unsigned-1"))
    assert unsigned.status_code == 401, unsigned.text
    assert diagnostics(unsigned).startswith("signature-required")
    assert (await send(batch("first-1"), first)).status_code == 202

    # Rotated: the new key works at once, the one the server read before no longer does.
    second = Ed25519PrivateKey.generate()
    await provisioning.set_signing_key(database, world.device_id, raw_base64(second))
    assert (await send(batch("second-1"), second)).status_code == 202
    old = await send(batch("first-2"), first)
    assert old.status_code == 401, old.text
    assert diagnostics(old).startswith("signature-key-unknown")

    # Rotated again while the server holds the second key: a reading signed by it is not
    # stored, though the server's own check of it passed.
    await provisioning.set_signing_key(
        database, world.device_id, raw_base64(Ed25519PrivateKey.generate())
    )
    stale = await send(batch("second-2"), second)
    assert stale.status_code == 401, stale.text
    assert diagnostics(stale).startswith("signature-key-unknown")

    # Made optional again: unsigned readings are accepted from the next request.
    await provisioning.require_signatures(database, world.device_id, False)
    assert (await send(batch("after-1"))).status_code == 202

    async with database.read() as conn:
        stored = (await conn.execute(select(observations.c.message_id))).scalars().all()
    assert sorted(stored) == ["after-1", "before-1", "first-1", "second-1"]


async def test_signed_mqtt_envelopes_are_checked_and_refusals_dead_lettered(
    database_url: str, database: Database, world: World, start_broker: StartBroker
) -> None:
    key = Ed25519PrivateKey.generate()
    # The raw key in base64 (libsodium firmware), and this one device must sign.
    await provisioning.set_signing_key(database, world.device_id, raw_base64(key), required=True)
    platform = Platform(world)
    broker = start_broker(platform.users)
    device = world.device_id
    good_body = batch("mq-good-1")
    good = REF.mqtt_envelope(key, device, good_body)
    altered = orjson.loads(good)
    altered["payload"] = base64.b64encode(batch("mq-altered-1")).decode()
    stale_body = batch("mq-stale-1")
    messages = [
        good,
        orjson.dumps(altered),
        REF.mqtt_envelope(Ed25519PrivateKey.generate(), device, batch("mq-wrong-1")),
        good,  # the same envelope again: a replay
        REF.mqtt_envelope(key, device, stale_body, time.time() - 3600),
        batch("mq-unsigned-1"),
    ]
    async with running_ingest(database_url, broker, platform.ingest_password):
        client = device_client(broker, device, platform.device_password)
        for payload in messages:
            assert publish(client, topic(device), payload).is_published()
        assert await wait_for(database, 5, table=dead_letters, timeout=60) == 5
        client.disconnect()
    assert await stored_count(database) == 1
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(device)
    assert sorted(letter.reason for letter in letters) == [
        "signature-invalid",
        "signature-key-unknown",
        "signature-replayed",
        "signature-required",
        "signature-stale",
    ]
    assert all(letter.detail for letter in letters)


async def test_hl7_readings_of_a_device_that_must_sign_are_refused_over_mllp(
    database: Database, world: World
) -> None:
    monitor = await provisioning.register_device(
        database, display_name="Bedside monitor", serial_number="MONITOR-7", shared_monitor=True
    )
    key = Ed25519PrivateKey.generate()
    await provisioning.set_signing_key(database, monitor.device_id, pem(key), required=True)
    server = MllpServer(database, IngestPipeline(database, clock=lambda: BASE_TIME))
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        peer = Peer(reader, writer)
        ack = await peer.send(oru("SIG-0001", *VITALS))
        writer.close()
    finally:
        await server.stop()
    code, control_id, text = msa(ack)
    assert (code, control_id) == ("AE", "SIG-0001")
    assert "signature-required" in text
    assert await stored_count(database) == 0
    async with database.read() as conn:
        letters = await DeadLetters(conn).for_device(monitor.device_id)
    assert {letter.reason for letter in letters} == {"signature-required"}


def test_register_takes_a_public_key_and_refuses_one_that_is_not_before_registering(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    key = Ed25519PrivateKey.generate()
    (tmp_path / "raw.pub").write_bytes(raw_base64(key))
    (tmp_path / "bad.pub").write_bytes(base64.b64encode(b"not a key"))
    cli = CliRunner()
    good = cli.invoke(
        app,
        [
            "device",
            "register",
            "--name",
            "Cuff",
            "--public-key",
            str(tmp_path / "raw.pub"),
            "--require-signature",
        ],
    )
    assert good.exit_code == 0, good.output
    assert "must sign" in good.output
    device_id = re.search(r"device id:\s+(\S+)", good.output)
    assert device_id is not None
    bad = cli.invoke(
        app, ["device", "register", "--name", "Other", "--public-key", str(tmp_path / "bad.pub")]
    )
    assert bad.exit_code != 0 and "32 bytes" in bad.output

    async def registered() -> tuple[int, DeviceSigningKey | None]:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                count = await conn.scalar(select(func.count()).select_from(devices))
                return int(count or 0), await DeviceSigningKeys(conn).get(device_id.group(1))
        finally:
            await database.dispose()

    count, stored = asyncio.run(registered())
    assert count == 1  # the refused key registered no device
    assert stored is not None and stored.required and stored.key_id == REF.key_id(key)
