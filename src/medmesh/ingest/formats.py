"""The payload formats devices may send, by name, shared by every adapter.

`native` is medmesh's own JSON (ingest/native.py). Other formats register a parser under
their name; an MQTT topic suffix or an HTTP path picks one.
"""

from __future__ import annotations

from collections.abc import Callable

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import parse_body

# (body, sending device id) -> one Incoming per reading; raises InvalidReading when the body
# as a whole is unusable.
Parser = Callable[[bytes, str], list[Incoming]]

NATIVE = "native"


class Formats:
    def __init__(self, max_readings: int) -> None:
        self._parsers: dict[str, Parser] = {
            NATIVE: lambda body, device_id: parse_body(body, max_readings, device_id)
        }

    def register(self, name: str, parser: Parser) -> None:
        self._parsers[name] = parser

    @property
    def names(self) -> list[str]:
        return sorted(self._parsers)

    def parse(self, name: str, body: bytes, device_id: str) -> list[Incoming]:
        parser = self._parsers.get(name)
        if parser is None:
            raise InvalidReading(RejectReason.UNKNOWN_FORMAT, "no such payload format")
        return parser(body, device_id)
