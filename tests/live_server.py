"""A real medmesh server in a child process, for tests that need a socket or a crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    database_url: str
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)  # MEDMESH_* settings of this server
    args: list[str] = field(default_factory=list)  # more `medmesh serve` options

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:  # a loaded machine starts slowly
        self.port = self.port or free_port()
        env = {**os.environ, "MEDMESH_DATABASE_URL": self.database_url, **self.env}
        command = ["serve", "--host", self.host, "--port", str(self.port), *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "medmesh", *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing — as a crash or power cut would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@contextmanager
def live_server(
    database_url: str,
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    start_timeout: float = 60.0,
) -> Iterator[LiveServer]:
    server = LiveServer(database_url, log_path, host=host, env=env or {}, args=args or [])
    server.start(start_timeout)
    try:
        yield server
    finally:
        server.stop()
