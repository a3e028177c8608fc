"""A light HTTP/1.1 client for the ingest benchmarks: one keep-alive connection, requests
written as bytes, answers read by their Content-Length.

Why not httpx: on two cores the load generator shares the machine with the server, and httpx
spends several times the CPU of a single-reading request's handling in the server itself, so
with many senders the client set the rate (docs/benchmarks.md, "A lighter load generator").
This client does only what the benchmarks need: POST and GET with a body of known length, no
redirects, no chunked answers, no TLS. Anything else raises.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson


class UnexpectedAnswer(RuntimeError):
    """The server answered in a way this client does not read (chunked, no length, closed)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


class LightHttp:
    """One keep-alive connection to `host:port`; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LightHttp:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def post_json(self, path: str, body: object, headers: dict[str, str]) -> Answer:
        return await self.request("POST", path, orjson.dumps(body), headers)

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert self._reader is not None and self._writer is not None, "not connected"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                raise UnexpectedAnswer(f"a {value.strip()} answer")
        if length is None:
            raise UnexpectedAnswer(f"no Content-Length in the answer ({status_line})")
        return Answer(int(status_line.split(" ", 2)[1]), await self._reader.readexactly(length))
