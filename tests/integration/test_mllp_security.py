"""Who may send over MLLP, for which patient, and how long and how much a sender may hold the
listener: real sockets (and TLS) against the listener, on both backends (issue 16, items 3-4)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import update

from medmesh import provisioning, wiring
from medmesh.config import Settings
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.mllp_guard import MllpLimits, parse_networks
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.database import Database
from medmesh.store.schema import devices
from tests.conftest import World, make_world
from tests.helpers import BASE_TIME
from tests.integration.test_mllp import END, START, VITALS, Peer, count, letters, msa, oru, stored
from tests.live_server import free_port, live_server

OTHER_PID = "PID|||MRN-2^^^urn:medmesh:mrn^MR||Roe^Richard"


async def _serve(database: Database, **limits: object) -> MllpServer:
    pipeline = IngestPipeline(database, clock=lambda: BASE_TIME + timedelta(hours=1))
    server = MllpServer(database, pipeline, limits=MllpLimits(**limits))  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def listener(database: Database) -> AsyncIterator[MllpServer]:
    server = await _serve(database)
    yield server
    await server.stop()


async def _connect(port: int, tls: ssl.SSLContext | None = None) -> Peer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    return Peer(reader, writer)


async def _closed_by_server(peer: Peer) -> bool:
    """True once the server has closed the connection (EOF or reset), without an answer."""
    try:
        return await asyncio.wait_for(peer.reader.read(), 20) == b""
    except (ConnectionError, ssl.SSLError):
        return True


# --- item 3: the device's patient -------------------------------------------------------------


async def _cuff_of(database: Database, world: World) -> None:
    """Give the world's device (assigned to patient A) the serial number the messages name."""
    async with database.write() as conn:
        await conn.execute(
            update(devices).where(devices.c.id == world.device_id).values(serial_number="MONITOR-7")
        )


async def test_a_device_cannot_write_into_another_patients_record_by_naming_them_in_pid(
    database_url: str, database: Database, world: World, listener: MllpServer
) -> None:
    other = await make_world(database, identifier="MRN-2")
    await _cuff_of(database, world)
    peer = await _connect(listener.port)
    ack = await peer.send(oru("MIX-1", *VITALS, pid=OTHER_PID))
    code, echoed, text = msa(ack)
    assert (code, echoed) == ("AE", "MIX-1")
    assert text == "6 of 6 observations refused: no-patient-assigned"
    assert {str(e(2)) for e in ack.segments("ERR")} == {"PID^1^3"}
    assert await stored(database, other.patient_id) == {}
    assert await stored(database, world.patient_id) == {}
    assert {r[2] for r in await letters(database)} == {"no-patient-assigned"}
    # The same device naming its own patient is stored as before.
    ok = await peer.send(oru("MIX-2", *VITALS))
    assert msa(ok)[0] == "AA"
    assert len(await stored(database, world.patient_id)) == 5
    # Marked as a shared bedside monitor (the CLI), the device's patients come from PID.
    said = _medmesh(database_url, "device", "shared-monitor", world.device_id)
    assert "shared monitor" in said
    assert msa(await peer.send(oru("MIX-3", *VITALS, pid=OTHER_PID)))[0] == "AA"
    assert len(await stored(database, other.patient_id)) == 5
    _medmesh(database_url, "device", "shared-monitor", world.device_id, "--off")
    assert msa(await peer.send(oru("MIX-4", *VITALS, pid=OTHER_PID)))[0] == "AE"
    peer.writer.close()


def _medmesh(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "medmesh", *args],
        env={"MEDMESH_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def test_a_shared_monitor_registered_with_the_cli_takes_its_patients_from_pid(
    database_url: str,
    database: Database,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = await make_world(database, identifier="MRN-2")
    _medmesh(
        database_url, "device", "register", "--name", "Bed 7", "--serial", "MONITOR-7",
        "--shared-monitor",
    )  # fmt: skip
    port = free_port()
    monkeypatch.setenv("MEDMESH_MLLP_PORT", str(port))
    with live_server(database_url, tmp_path / "server.log"):
        peer = await _connect(port)
        first = await peer.send(oru("BED-1", *VITALS))
        second = await peer.send(oru("BED-2", *VITALS, pid=OTHER_PID))
        peer.writer.close()
    assert msa(first)[0] == msa(second)[0] == "AA"
    assert len(await stored(database, world.patient_id)) == 5
    assert len(await stored(database, other.patient_id)) == 5


# --- item 3: senders by address ---------------------------------------------------------------


async def test_a_sender_outside_the_allowed_addresses_is_disconnected_unanswered(
    database: Database, world: World
) -> None:
    server = await _serve(database, allowed_senders=parse_networks(["10.0.0.0/8"]))
    try:
        peer = await _connect(server.port)
        peer.writer.write(START + oru("FAR-1", *VITALS).encode() + END)
        assert await _closed_by_server(peer)
    finally:
        await server.stop()
    assert await count(database) == 0


def test_allowed_senders_default_to_loopback_and_are_read_comma_separated() -> None:
    assert wiring.mllp_limits(Settings()).allows("127.0.0.1")
    assert not wiring.mllp_limits(Settings()).allows("192.0.2.7")
    listed = Settings(mllp_allowed_senders="192.0.2.0/24, 2001:db8::/32")  # type: ignore[arg-type]
    assert wiring.mllp_limits(listed).allows("192.0.2.7")
    assert wiring.mllp_limits(listed).allows("2001:db8::1")
    assert not wiring.mllp_limits(listed).allows("127.0.0.1")
    with pytest.raises(ValueError, match="not an IP address or network"):
        Settings(mllp_allowed_senders="not-an-address")  # type: ignore[arg-type]


# --- item 3: TLS with client certificates -----------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    server_cert: Path
    server_key: Path
    ca: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from a CA the server does not know
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> _Pki:
    directory = tmp_path_factory.mktemp("mllp-pki")
    cas = {}
    for name in ("device-ca", "rogue-ca"):
        key = _key()
        cas[name] = (_certificate(name, key, None, ca=True), key)
    ca_cert, ca_key = cas["device-ca"]
    _write(directory, "ca", ca_cert, ca_key)
    issuer = (ca_cert.subject, ca_key)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    server = _certificate("localhost", server_key, issuer, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _certificate("MONITOR-7", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_ca, rogue_ca_key = cas["rogue-ca"]
    rogue = _certificate(
        "MONITOR-7", rogue_key, (rogue_ca.subject, rogue_ca_key),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    server_paths = _write(directory, "server", server, server_key)
    client_paths = _write(directory, "client", client, client_key)
    rogue_paths = _write(directory, "rogue", rogue, rogue_key)
    return _Pki(*server_paths, directory / "ca.pem", *client_paths, *rogue_paths)


def _client_context(pki: _Pki, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


async def _try_over_tls(port: int, context: ssl.SSLContext, control_id: str) -> str | None:
    """MSA-1 of the answer, or None when the server refused the connection."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
    except (ssl.SSLError, ConnectionError):
        return None
    try:
        writer.write(START + oru(control_id, *VITALS).encode() + END)
        await writer.drain()
        block = await asyncio.wait_for(reader.readuntil(END), 20)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()
    return msa(hl7.parse(block[1:-2].decode()))[0]


async def test_mllp_over_tls_requires_a_client_certificate_from_the_configured_ca(
    database: Database, world: World, monitor: str, pki: _Pki
) -> None:
    settings = Settings(
        mllp_cert_file=str(pki.server_cert),
        mllp_key_file=str(pki.server_key),
        mllp_client_ca_file=str(pki.ca),
    )
    server = MllpServer(database, IngestPipeline(database, clock=lambda: BASE_TIME))
    await server.start("127.0.0.1", 0, tls=wiring.mllp_tls(settings))
    try:
        cert = (pki.client_cert, pki.client_key)
        rogue = (pki.rogue_cert, pki.rogue_key)
        valid = await _try_over_tls(server.port, _client_context(pki, cert), "TLS-1")
        missing = await _try_over_tls(server.port, _client_context(pki, None), "TLS-2")
        wrong_ca = await _try_over_tls(server.port, _client_context(pki, rogue), "TLS-3")
    finally:
        await server.stop()
    assert (valid, missing, wrong_ca) == ("AA", None, None)
    assert await count(database) == 6  # TLS-1 only


@pytest.fixture
async def monitor(database: Database) -> str:
    credential = await provisioning.register_device(
        database, display_name="Bedside monitor", serial_number="MONITOR-7", shared_monitor=True
    )
    return credential.device_id


# --- item 4: timeouts, connection counts, memory ----------------------------------------------


async def test_a_partial_message_is_closed_after_the_read_timeout(
    database: Database, world: World, monitor: str
) -> None:
    server = await _serve(database, read_timeout=0.5, idle_timeout=600)
    try:
        half = await _connect(server.port)
        half.writer.write(START + b"MSH|^~\\&|MONITOR-7|ICU")  # no end bytes, ever
        await half.writer.drain()
        assert await _closed_by_server(half)
        fresh = await _connect(server.port)
        assert msa(await fresh.send(oru("AFTER-1", *VITALS)))[0] == "AA"
        fresh.writer.close()
    finally:
        await server.stop()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    database: Database, world: World, monitor: str
) -> None:
    server = await _serve(database, idle_timeout=0.5)
    try:
        peer = await _connect(server.port)
        assert msa(await peer.send(oru("IDLE-1", *VITALS)))[0] == "AA"
        assert await _closed_by_server(peer)  # then nothing more is sent
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "limits", [{"max_connections": 2}, {"max_connections_per_address": 2}], ids=["all", "address"]
)
async def test_connections_over_the_maximum_are_closed_and_the_others_keep_working(
    database: Database, world: World, monitor: str, limits: dict[str, int]
) -> None:
    server = await _serve(database, **limits)
    try:
        first, second = await _connect(server.port), await _connect(server.port)
        assert msa(await first.send(oru("MAX-1", *VITALS)))[0] == "AA"  # both are admitted
        third = await _connect(server.port)
        assert await _closed_by_server(third)
        assert msa(await second.send(oru("MAX-2", *VITALS)))[0] == "AA"
        first.writer.close()
        second.writer.close()
        await asyncio.wait_for(first.reader.read(), 20)
        await asyncio.wait_for(second.reader.read(), 20)
        # Closed connections give their places back.
        for _ in range(100):
            again = await _connect(server.port)
            try:
                if msa(await again.send(oru("MAX-3", *VITALS)))[0] == "AA":
                    break
            except (ConnectionError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)  # the server had not yet seen the others close
            finally:
                again.writer.close()
        else:
            pytest.fail("a place was never given back")
    finally:
        await server.stop()


async def test_a_connection_that_would_pass_the_partial_message_memory_cap_is_closed(
    database: Database, world: World, monitor: str
) -> None:
    server = await _serve(database, max_buffered_bytes=4096)
    try:
        holding = await _connect(server.port)
        holding.writer.write(START + b"x" * 3000)
        await holding.writer.drain()
        while server.buffered_bytes < 3001:  # until the server holds it
            await asyncio.sleep(0.01)
        greedy = await _connect(server.port)
        greedy.writer.write(START + b"y" * 2000)
        await greedy.writer.drain()
        assert await _closed_by_server(greedy)
        # The first connection is unaffected: its message completes and gets its answer.
        holding.writer.write(END)
        block = await asyncio.wait_for(holding.reader.readuntil(END), 20)
        assert b"MSA|AR" in block
        holding.writer.close()
    finally:
        await server.stop()
    assert [r[2] for r in await letters(database)] == ["malformed-body"]


async def test_medmesh_serve_reads_the_mllp_limits_from_settings(
    database_url: str,
    database: Database,
    world: World,
    monitor: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("MEDMESH_MLLP_PORT", str(port))
    monkeypatch.setenv("MEDMESH_MLLP_READ_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("MEDMESH_MLLP_MAX_CONNECTIONS_PER_ADDRESS", "1")
    with live_server(database_url, tmp_path / "server.log"):
        half = await _connect(port)
        half.writer.write(START + b"MSH|")
        await half.writer.drain()
        second = await _connect(port)
        assert await _closed_by_server(second)  # one connection per address
        assert await _closed_by_server(half)  # the partial message timed out
    log = (tmp_path / "server.log").read_text()
    assert "refused: too many connections from one address" in log
    assert "timed out with a partial message" in log
    assert "Traceback" not in log
