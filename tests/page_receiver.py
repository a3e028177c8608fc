"""A plain-HTTP receiver on loopback for apprise's json:// and form:// URLs: uvicorn serving
a tiny Starlette app in a thread, keeping each request's body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class PageReceiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        app = Starlette(routes=[Route("/pages", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True)

    def url(self, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/pages"

    async def _hook(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        return Response(status_code=200)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the page receiver did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.bodies)} of {count} pages arrived")
            await asyncio.sleep(0.02)
        return self.bodies[:count]


@pytest.fixture
def page_receiver() -> Iterator[PageReceiver]:
    receiver = PageReceiver()
    receiver.start()
    yield receiver
    receiver.stop()
