"""Limits on the size of a request, enforced before the app reads it.

A body over its route's limit is refused with 413: at once when Content-Length declares it,
and as soon as the count passes the limit when it streams without one (chunked). The URL and
the number of headers are limited too: uvicorn's default parser (httptools) refuses only a
request line past about 64 kB, and takes any number of headers. Every refusal is a FHIR
OperationOutcome that names the limit, never the data.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medmesh.domain.errors import PayloadTooLarge
from medmesh.http.responses import FhirResponse, operation_outcome


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """`body_bytes` for every route except those under a prefix of `body_bytes_by_prefix`
    (first match wins), e.g. device batches under /ingest/."""

    body_bytes: int
    body_bytes_by_prefix: tuple[tuple[str, int], ...] = ()
    url_bytes: int = 8192
    header_count: int = 100

    def body_limit(self, path: str) -> int:
        for prefix, limit in self.body_bytes_by_prefix:
            if path.startswith(prefix):
                return limit
        return self.body_bytes


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _BodyTooLarge(PayloadTooLarge):
    """Raised into the app from receive(); the route's own answer is then replaced by ours."""


def _refusal(status: int, code: str, diagnostics: str) -> FhirResponse:
    # Connection: close, so that the server does not read the rest of the refused body as
    # the next request on this connection.
    return FhirResponse(
        operation_outcome(code, diagnostics), status_code=status, headers={"Connection": "close"}
    )


def _too_large(limit: int) -> FhirResponse:
    return _refusal(413, "too-costly", f"the request body is larger than {limit} bytes")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _url_length(scope: Scope) -> int:
    raw_path: bytes | None = scope.get("raw_path")
    path_length = len(raw_path) if raw_path is not None else len(scope["path"].encode())
    return path_length + len(scope.get("query_string", b""))


class RequestSizeLimit:
    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _url_length(scope) > self.limits.url_bytes:
            refusal = _refusal(
                414, "too-long", f"the URL is longer than {self.limits.url_bytes} bytes"
            )
            await refusal(scope, receive, send)
            return
        if len(scope["headers"]) > self.limits.header_count:
            refusal = _refusal(
                431, "too-long", f"the request has more than {self.limits.header_count} headers"
            )
            await refusal(scope, receive, send)
            return
        if _CONTROL.search(scope["path"]):
            # No id of ours holds a control character (NUL included, which PostgreSQL text
            # refuses): such a path names nothing.
            await _refusal(404, "not-found", "no resource has this path")(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return

        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise _BodyTooLarge(f"the request body is larger than {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # whatever the app makes of a body it could not read: ours instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # A route or parser that lets the error through is answered below all the same.
        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if refused and not started:
            await _too_large(limit)(scope, receive, send)
