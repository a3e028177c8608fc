"""Time-limited TURN credentials minted by medmesh against a real coturn (Debian's
`turnserver`, in `use-auth-secret` mode as deploy/coturn ships it): a fresh credential
allocates a relay, an expired one and one from another secret are refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medmesh.care.visits import turn_credential
from tests.live_server import free_port

SECRET = "a-long-random-secret-shared-with-medmesh"


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[int]:
    if shutil.which("turnserver") is None or shutil.which("turnutils_uclient") is None:
        if os.environ.get("CI"):
            pytest.fail("coturn is missing; CI requires the TURN test")
        pytest.skip("coturn is missing (apt-get install coturn)")
    port = free_port()
    config = tmp_path / "turnserver.conf"
    config.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                "use-auth-secret",
                f"static-auth-secret={SECRET}",
                "realm=medmesh.test",
                "no-tls",
                "no-dtls",
                "no-cli",
                "allow-loopback-peers",  # the test's peer is on loopback; never in production
                f"pidfile={tmp_path / 'turn.pid'}",
                f"log-file={tmp_path / 'turn.log'}",
            ]
        )
    )
    process = subprocess.Popen(["turnserver", "-c", str(config)], stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _allocates(port: int, username: str, password: str) -> bool:
    run = subprocess.run(
        [
            "turnutils_uclient",
            "-y",
            "-n",
            "2",
            "-u",
            username,
            "-w",
            password,
            "-p",
            str(port),
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run.returncode == 0 and "Total lost packets 0" in run.stdout + run.stderr


def test_a_fresh_credential_relays_and_an_expired_or_foreign_one_is_refused(turn: int) -> None:
    now = datetime.now(UTC)
    assert _allocates(turn, *turn_credential(SECRET, "ada", now + timedelta(minutes=10)))
    assert not _allocates(turn, *turn_credential(SECRET, "ada", now - timedelta(minutes=1)))
    assert not _allocates(turn, *turn_credential("another secret", "ada", now + timedelta(hours=1)))
