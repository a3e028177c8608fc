"""A private Mosquitto broker per test, configured with the shipped ACL (deploy/mosquitto/acl)
and a password file written by medmesh's own provisioning code.

It listens on a plain port and a TLS port (certificates from deploy/mosquitto/make-dev-certs.sh).
Without the mosquitto binary the tests skip with the reason, except in CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medmesh.access.identity.mosquitto import set_password
from tests.live_server import free_port

REPO = Path(__file__).resolve().parent.parent
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "acl"
SHIPPED_CONFIG = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
SHIPPED_DIR = "/etc/mosquitto/medmesh/"
MAKE_CERTS = REPO / "deploy" / "mosquitto" / "make-dev-certs.sh"
INGEST_USER = "medmesh-ingest"


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        message = "the mosquitto broker is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it (see .ci/run)")
        pytest.skip(message)
    return found


@dataclass
class Broker:
    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    # Sessions and queued messages kept across a restart (as the shipped configuration does):
    # the fault tests stop and start the broker under load.
    persistence: bool = False
    port: int = 0
    tls_port: int = 0
    mtls_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.crt")

    def start(self) -> None:
        # A restarted broker keeps its ports, so clients reconnect to where it was.
        self.port, self.tls_port = self.port or free_port(), self.tls_port or free_port()
        password_file = self.directory / "passwd"
        for user, password in self.users.items():
            set_password(password_file, user, password)
        config = self.directory / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    "user root",
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {password_file}",
                    f"acl_file {SHIPPED_ACL}",
                    *(
                        [
                            "persistence true",
                            f"persistence_location {self.directory}/",
                            "autosave_interval 1",
                        ]
                        if self.persistence
                        else ["persistence false"]
                    ),
                    "max_inflight_messages 500",
                    # as deploy/mosquitto/mosquitto.conf: the default 1000 drops a backlog
                    "max_queued_messages 100000",
                    f"listener {self.port} 127.0.0.1",
                    f"listener {self.tls_port} 127.0.0.1",
                    f"cafile {self.directory / 'ca.crt'}",
                    f"certfile {self.directory / 'server.crt'}",
                    f"keyfile {self.directory / 'server.key'}",
                    "",
                ]
            )
        )
        with (self.directory / "mosquitto.log").open("ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(config), "-v"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start; see {self.directory / 'mosquitto.log'}")

    def start_shipped(self) -> None:
        """Start with deploy/mosquitto/mosquitto.conf itself: its paths moved to this
        directory, its listeners (8883 password, 8884 device certificates) to free loopback
        ports, persistence off; the device CA's `device-ca.crt` and `device-crl.pem` must be
        here."""
        self.port, self.tls_port, self.mtls_port = free_port(), free_port(), free_port()
        password_file = self.directory / "passwd"
        for user, password in self.users.items():
            set_password(password_file, user, password)
        shutil.copy(SHIPPED_ACL, self.directory / "acl")
        text = SHIPPED_CONFIG.read_text().replace(SHIPPED_DIR, f"{self.directory}/")
        text = text.replace("persistence true", "persistence false")
        text = text.replace("listener 8883\n", f"listener {self.tls_port} 127.0.0.1\n")
        text = text.replace("listener 8884\n", f"listener {self.mtls_port} 127.0.0.1\n")
        assert str(self.mtls_port) in text and str(self.tls_port) in text, "listeners moved?"
        config = self.directory / "mosquitto.conf"
        config.write_text(f"user root\n{text}\n")
        self._launch(config, self.tls_port)

    def reload(self) -> None:
        """SIGHUP: the broker reads its password file, ACL and CRL again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def _launch(self, config: Path, port: int) -> None:
        with (self.directory / "mosquitto.log").open("ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(config), "-v"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start; see {self.directory / 'mosquitto.log'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def broker_certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mqtt-certs")
    subprocess.run([str(MAKE_CERTS), str(directory), "localhost"], check=True, capture_output=True)
    return directory


@pytest.fixture
def broker_dir(tmp_path: Path, broker_certificates: Path) -> Path:
    directory = tmp_path / "broker"
    directory.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(broker_certificates / name, directory / name)
    return directory


@pytest.fixture
def start_broker(broker_dir: Path) -> Iterator[Callable[[dict[str, str]], Broker]]:
    """`start_broker({user: password, …})` starts a broker that knows those users."""
    started: list[Broker] = []

    def start(users: dict[str, str]) -> Broker:
        broker = Broker(broker_dir, dict(users))
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
