"""Device certificates (docs/device-certificates.md), end to end with real certificates:
`medmesh ca init`, `medmesh device cert` and `medmesh device revoke` run as the real CLI; a
private Mosquitto runs the shipped configuration (deploy/mosquitto/mosquitto.conf, its
mutual-TLS listener) and is reached with mosquitto_pub and paho; HTTP ingest takes the
certificate a trusted proxy forwards; the MLLP listener ties a certificate to its device."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from medmesh.access.identity.credentials import new_secret
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.crypto import device_ca
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.mqtt import MqttIngest
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from medmesh.store.device_certificates import DeviceCertificates
from medmesh.store.schema import dead_letters, observations
from tests.conftest import World, make_world
from tests.helpers import reading
from tests.integration.test_mllp import BPM, T, nm
from tests.integration.test_mqtt_ingest import running_ingest, stored_count, topic, wait_for
from tests.mosquitto_broker import INGEST_USER, MAKE_CERTS, Broker

MEDMESH = str(Path(sys.executable).with_name("medmesh"))


@dataclass
class Pki:
    """The device CA of one test, driven through the real command line."""

    ca_dir: Path
    crl_file: Path
    env: dict[str, str]

    def medmesh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [MEDMESH, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def issue(self, device_id: str, out: Path, *extra: str) -> tuple[Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        self.medmesh("device", "cert", device_id, "--out", str(out), *extra)
        return out / f"{device_id}.crt", out / f"{device_id}.key"

    def expired(self, device_id: str, out: Path) -> tuple[Path, Path]:
        """A certificate the device CA signed (with its key, as `device cert` would) whose
        validity ended ten days ago."""
        ca = device_ca.load_ca(self.ca_dir, with_key=True)
        assert ca.key is not None
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=40))
            .not_valid_after(now - timedelta(days=10))
            .sign(ca.key, hashes.SHA256())
        )
        out.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = out / f"{device_id}.crt", out / f"{device_id}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def other_ca_certificate(device_id: str, out: Path) -> tuple[Path, Path]:
    """A certificate naming the device, from another CA (openssl, deploy's dev-cert script)."""
    subprocess.run(
        [str(MAKE_CERTS), str(out), "localhost", device_id], check=True, capture_output=True
    )
    return out / f"{device_id}.crt", out / f"{device_id}.key"


@pytest.fixture
def pki(database_url: str, tmp_path: Path, broker_dir: Path) -> Pki:
    """A device CA made by `medmesh ca init`, its CRL published into the broker's directory."""
    env = {
        "MEDMESH_DATABASE_URL": database_url,
        "MEDMESH_DEVICE_CA_DIR": str(tmp_path / "device-ca"),
        "MEDMESH_DEVICE_CRL_FILE": str(broker_dir / "device-crl.pem"),
    }
    made = Pki(tmp_path / "device-ca", broker_dir / "device-crl.pem", env)
    made.medmesh("ca", "init")
    shutil.copy(made.ca_dir / device_ca.CA_CERT, broker_dir / "device-ca.crt")
    return made


@dataclass
class Mtls:
    """A registered device, the device CA, Mosquitto on the shipped configuration, and the
    ingest worker's login to it."""

    database_url: str
    database: Database
    world: World
    pki: Pki
    broker: Broker
    ingest_password: str
    tmp_path: Path

    def parts(self) -> tuple[Broker, Database, World, Pki, Path]:
        return self.broker, self.database, self.world, self.pki, self.tmp_path

    def ingest(self) -> contextlib.AbstractAsyncContextManager[MqttIngest]:
        return running_ingest(self.database_url, self.broker, self.ingest_password, tls=True)


@pytest.fixture
def mtls(
    database_url: str, database: Database, world: World, pki: Pki, broker_dir: Path, tmp_path: Path
) -> Iterator[Mtls]:
    password = new_secret("mqp")
    broker = Broker(broker_dir, {INGEST_USER: password})
    broker.start_shipped()
    yield Mtls(database_url, database, world, pki, broker, password, tmp_path)
    broker.stop()


def mosquitto_pub(
    broker: Broker, cert: Path | None, key: Path | None, topic_name: str, body: bytes
) -> subprocess.CompletedProcess[str]:
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.mtls_port)]
    command += ["--cafile", broker.ca_file, "-V", "mqttv5", "-q", "1"]
    if cert is not None and key is not None:
        command += ["--cert", str(cert), "--key", str(key)]
    command += ["-t", topic_name, "-m", body.decode()]
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def body(*ids: str) -> bytes:
    return orjson.dumps({"readings": [reading(i) for i in ids]})


async def test_a_device_certificate_publishes_over_mutual_tls_and_its_reading_is_stored(
    mtls: Mtls,
) -> None:
    broker, database, world, pki, tmp_path = mtls.parts()
    cert, key = pki.issue(world.device_id, tmp_path / "device")
    assert (key.stat().st_mode & 0o777) == 0o600
    async with mtls.ingest():
        sent = await asyncio.to_thread(
            mosquitto_pub, broker, cert, key, topic(world.device_id), body("mtls-1")
        )
        assert sent.returncode == 0, sent.stderr
        assert await wait_for(database, 1) == 1
        # paho, as firmware or a gateway in Python would connect
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.tls_set(ca_certs=broker.ca_file, certfile=str(cert), keyfile=str(key))
        client.connect("127.0.0.1", broker.mtls_port)
        client.loop_start()
        info = client.publish(topic(world.device_id), body("mtls-2"), qos=1)
        info.wait_for_publish(timeout=10)
        assert await wait_for(database, 2) == 2
        client.loop_stop()
        client.disconnect()
    async with database.read() as conn:
        stored = (await conn.execute(select(observations.c.device_id))).scalars().all()
        recorded = await DeviceCertificates(conn).of_device(world.device_id)
    assert stored == [world.device_id, world.device_id]
    assert len(recorded) == 1 and recorded[0].revoked_at is None
    assert recorded[0].not_after - datetime.now(UTC) <= timedelta(days=30)  # the short default


async def test_expired_other_ca_and_missing_certificates_are_refused_by_the_broker(
    mtls: Mtls,
) -> None:
    broker, database, world, pki, tmp_path = mtls.parts()
    expired = pki.expired(world.device_id, tmp_path / "expired")
    foreign = other_ca_certificate(world.device_id, tmp_path / "other-ca")
    async with mtls.ingest():
        for cert, key in (expired, foreign, (None, None)):
            sent = await asyncio.to_thread(
                mosquitto_pub, broker, cert, key, topic(world.device_id), body("refused")
            )
            assert sent.returncode != 0, (cert, sent.stdout)
        # a good one afterwards shows the worker was listening all along
        good = pki.issue(world.device_id, tmp_path / "good")
        sent = await asyncio.to_thread(
            mosquitto_pub, broker, *good, topic(world.device_id), body("accepted")
        )
        assert sent.returncode == 0, sent.stderr
        assert await wait_for(database, 1) == 1
    log = (broker.directory / "mosquitto.log").read_text()
    assert "certificate has expired" in log or "certificate verify failed" in log
    assert await stored_count(database) == 1


async def test_a_revoked_certificate_is_refused_once_the_broker_reloads_the_crl(mtls: Mtls) -> None:
    broker, database, world, pki, tmp_path = mtls.parts()
    cert, key = pki.issue(world.device_id, tmp_path / "device")
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    async with mtls.ingest():
        before = await asyncio.to_thread(
            mosquitto_pub, broker, cert, key, topic(world.device_id), body("before")
        )
        assert before.returncode == 0, before.stderr
        assert await wait_for(database, 1) == 1
        revoked = pki.medmesh("device", "revoke", world.device_id)
        assert f"revoked {serial:x}" in revoked.stdout
        broker.reload()
        await asyncio.sleep(0.5)  # SIGHUP is handled asynchronously by the broker
        after = await asyncio.to_thread(
            mosquitto_pub, broker, cert, key, topic(world.device_id), body("after")
        )
        assert after.returncode != 0, after.stdout
        await asyncio.sleep(0.3)
    assert await stored_count(database) == 1
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    async with database.read() as conn:
        record = await DeviceCertificates(conn).get(format(serial, "x"))
        audited = [r.subtype for r in await AuditLog(conn).after(0, 100)]
    assert record is not None and record.revoked_at is not None
    assert "certificate-issue" in audited and "certificate-revoke" in audited


async def test_a_certificate_cannot_publish_on_another_devices_topic(mtls: Mtls) -> None:
    broker, database, world, pki, tmp_path = mtls.parts()
    victim = await make_world(database, identifier="MRN-VICTIM")
    cert, key = pki.issue(world.device_id, tmp_path / "device")
    refused: list[int] = []

    def on_publish(client: object, userdata: object, mid: int, reason: object, props: object):
        refused.append(int(reason.value))  # type: ignore[attr-defined]

    async with mtls.ingest():
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.on_publish = on_publish
        client.tls_set(
            ca_certs=broker.ca_file, certfile=str(cert), keyfile=str(key),
            cert_reqs=ssl.CERT_REQUIRED,
        )  # fmt: skip
        client.connect("127.0.0.1", broker.mtls_port)
        client.loop_start()
        client.publish(topic(victim.device_id), body("forged"), qos=1).wait_for_publish(10)
        client.publish(topic(world.device_id), body("own"), qos=1).wait_for_publish(10)
        assert await wait_for(database, 1) == 1
        await asyncio.sleep(0.3)
        client.loop_stop()
        client.disconnect()
    assert refused[0] == 135  # MQTT 5 PUBACK: Not authorized (the shipped ACL's %u pattern)
    async with database.read() as conn:
        owners = (await conn.execute(select(observations.c.device_id))).scalars().all()
    assert owners == [world.device_id]


async def test_a_csr_made_with_openssl_is_certified_for_the_device_and_no_key_is_written(
    world: World, pki: Pki, tmp_path: Path
) -> None:
    out = tmp_path / "csr"
    out.mkdir()
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=someone-else", "-keyout", str(out / "device.key"),
         "-out", str(out / "device.csr")],
        check=True, capture_output=True,
    )  # fmt: skip
    cert, key = pki.issue(world.device_id, out, "--csr", str(out / "device.csr"), "--days", "2")
    assert not key.exists()  # the key stayed where it was made
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    device_key = serialization.load_pem_private_key((out / "device.key").read_bytes(), None)
    assert issued.public_key() == device_key.public_key()
    assert issued.subject.rfc4514_string() == f"CN={world.device_id}"  # not the CSR's subject
    assert issued.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=2)
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki.ca_dir / "ca.crt"), str(cert)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    unknown = pki.medmesh("device", "cert", str(uuid.uuid4()), "--out", str(out), check=False)
    assert unknown.returncode == 1 and "error:" in unknown.stderr


# HTTP ingest: the certificate a reverse proxy forwards (nginx: $ssl_client_escaped_cert).


async def _http_answers(
    database_url: str, pki: Pki, headers: list[dict[str, str]], *, peer: str = "127.0.0.1"
) -> list[httpx.Response]:
    settings = Settings(
        database_url=database_url,
        auto_migrate=False,
        trusted_proxies="127.0.0.1",
        device_ca_dir=pki.ca_dir,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    answers = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        for i, extra in enumerate(headers):
            payload = {"readings": [reading(f"http-{i}-{uuid.uuid4().hex[:6]}")]}
            answers.append(await http.post("/ingest/v1/readings", json=payload, headers=extra))
    return answers


def forwarded(cert: Path) -> dict[str, str]:
    """As nginx's `proxy_set_header X-Client-Cert $ssl_client_escaped_cert;` sends it."""
    return {"X-Client-Cert": quote(cert.read_text(), safe=""), "X-Forwarded-For": "198.51.100.7"}


async def test_http_ingest_takes_a_certificate_forwarded_by_a_trusted_proxy(
    database_url: str, database: Database, world: World, pki: Pki, tmp_path: Path
) -> None:
    valid, _ = pki.issue(world.device_id, tmp_path / "valid")
    revoked, _ = pki.issue(world.device_id, tmp_path / "revoked")
    serial = x509.load_pem_x509_certificate(revoked.read_bytes()).serial_number
    pki.medmesh("device", "revoke", format(serial, "x"))
    expired, _ = pki.expired(world.device_id, tmp_path / "expired")
    foreign, _ = other_ca_certificate(world.device_id, tmp_path / "other-ca")
    answers = await _http_answers(
        database_url, pki, [forwarded(valid), forwarded(revoked), forwarded(expired),
                            forwarded(foreign)],
    )  # fmt: skip
    assert [a.status_code for a in answers] == [202, 401, 401, 401], [a.text for a in answers]
    details = " ".join(a.text for a in answers[1:])
    assert (
        "revoked" in details and "expired" in details and "not issued by the device CA" in details
    )
    assert answers[0].json()["accepted"] == 1
    assert await stored_count(database) == 1


async def test_a_forwarded_certificate_from_an_untrusted_address_is_ignored(
    database_url: str, database: Database, world: World, pki: Pki, tmp_path: Path
) -> None:
    valid, _ = pki.issue(world.device_id, tmp_path / "valid")
    answers = await _http_answers(
        database_url,
        pki,
        [forwarded(valid), {**forwarded(valid), **world.device_headers}],
        peer="203.0.113.9",
    )
    # Without the secret: as if the header were not there. With it: the secret decides.
    assert answers[0].status_code == 401 and "bearer token is required" in answers[0].text
    assert answers[1].status_code == 202
    assert await stored_count(database) == 1


# MLLP: a client certificate is tied to its device.


def _oru(serial: str, control_id: str) -> bytes:
    """A monitor's ORU^R01: one pulse rate, from the device with this serial (MSH-3)."""
    return "\r".join(
        [
            f"MSH|^~\\&|{serial}|ICU|medmesh|HOSP|{T}||ORU^R01^ORU_R01|{control_id}|P|2.6|||NE|AL",
            "PID|||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane",
            f"OBR|1|{control_id}^{serial}||182777000^monitoring^SCT|||{T}",
            nm(1, "149530^MDC_PULS_OXIM_PULS_RATE", "1.1.1.2", "72", BPM),
        ]
    ).encode()


async def _send_mllp(port: int, context: ssl.SSLContext, message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(b"\x0b" + message + b"\x1c\x0d")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 15)
    writer.close()
    return answer


async def test_an_mllp_certificate_sends_for_its_own_device_only(
    database: Database, pki: Pki, broker_dir: Path, tmp_path: Path
) -> None:
    from medmesh import provisioning
    from medmesh.access.identity.device_certificates import DeviceTrust
    from medmesh.wiring import mllp_tls

    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="MRN-1"
    )
    monitors = []
    for serial in ("MON-A", "MON-B"):
        device = await provisioning.register_device(
            database, display_name=serial, serial_number=serial
        )
        await provisioning.assign_device(
            database, device.device_id, patient.id, datetime(2020, 1, 1, tzinfo=UTC)
        )
        monitors.append(device.device_id)
    cert_a, key_a = pki.issue(monitors[0], tmp_path / "a")
    settings = Settings(
        mllp_cert_file=str(broker_dir / "server.crt"),
        mllp_key_file=str(broker_dir / "server.key"),
        mllp_client_ca_file=str(pki.ca_dir / device_ca.CA_CERT),
    )
    tls = mllp_tls(settings)
    assert tls is not None
    server = MllpServer(database, IngestPipeline(database), device_trust=DeviceTrust(pki.ca_dir))
    await server.start("127.0.0.1", 0, tls=tls)
    try:
        client = ssl.create_default_context(cafile=str(broker_dir / "ca.crt"))
        client.load_cert_chain(str(cert_a), str(key_a))
        own = await _send_mllp(server.port, client, _oru("MON-A", "C-1"))
        other = await _send_mllp(server.port, client, _oru("MON-B", "C-2"))
        pki.medmesh("device", "revoke", monitors[0])
        with pytest.raises(asyncio.IncompleteReadError):  # closed unanswered, nothing read
            await _send_mllp(server.port, client, _oru("MON-A", "C-3"))
    finally:
        await server.stop()
    assert b"MSA|AA|C-1" in own
    assert b"MSA|AE|C-2" in other and b"device-mismatch" in other
    async with database.read() as conn:
        owners = (await conn.execute(select(observations.c.device_id))).scalars().all()
        reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
    assert owners == [monitors[0]]
    assert reasons == ["device-mismatch"]
