"""A real HTTPS webhook receiver for tests: uvicorn serving a tiny Starlette app, in a thread,
with a server certificate from deploy/mosquitto/make-dev-certs.sh. It records every request
and answers with the statuses it is given, then 200."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MAKE_CERTS = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "make-dev-certs.sh"


@dataclass(frozen=True, slots=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, cert_dir: Path, statuses: tuple[int, ...] = ()) -> None:
        self.cert_dir = cert_dir
        self.statuses = deque(statuses)
        self.requests: list[Received] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app,
            ssl_certfile=str(cert_dir / "server.crt"),
            ssl_keyfile=str(cert_dir / "server.key"),
            log_level="critical",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: Request) -> Response:
        self.requests.append(Received(dict(request.headers), await request.body()))
        status = self.statuses.popleft() if self.statuses else 200
        return Response(status_code=status)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, once they have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} of {count} requests arrived")
            await asyncio.sleep(0.02)
        return self.requests[:count]


@dataclass(frozen=True, slots=True)
class Certificates:
    trusted: Path  # the CA medmesh is configured with, and a server certificate it signed
    rogue: Path  # another CA and server certificate, unknown to medmesh


@pytest.fixture(scope="session")
def webhook_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    made = []
    for name in ("trusted", "rogue"):
        directory = tmp_path_factory.mktemp(f"webhook-{name}")
        subprocess.run([str(MAKE_CERTS), str(directory)], check=True, capture_output=True)
        made.append(directory)
    return Certificates(*made)


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    """`start_receiver(cert_dir, statuses=())` starts a receiver, stopped after the test."""
    started: list[Receiver] = []

    def start(cert_dir: Path, statuses: tuple[int, ...] = ()) -> Receiver:
        receiver = Receiver(cert_dir, statuses)
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
