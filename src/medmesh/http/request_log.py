"""One log line per HTTP request: method, path, status, duration. Never the query string
(search parameters may be health data) nor bodies; control characters escaped. Replaces
uvicorn's access log."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from medmesh.http.status import StatusRecorder
from medmesh.logs import escape_controls

log = logging.getLogger("medmesh.access")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = StatusRecorder(send)
        try:
            await self.app(scope, receive, answer)
        finally:
            log.info(
                "%s %s %d %.1f ms",
                escape_controls(scope["method"]),
                # Decoded: %0D%0A in a request would otherwise start a forged line.
                escape_controls(scope["path"]),
                answer.status,
                (time.perf_counter() - started) * 1000,
            )
