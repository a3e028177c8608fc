"""A local SMTP server (aiosmtpd) that keeps what it receives, for the notification tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.live_server import free_port


@dataclass
class Sink:
    port: int
    received: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(message_from_bytes(envelope.content))
        return "250 OK"


_RANDOM_PARTS = re.compile(r"https?://\S+|Code: [A-Z0-9-]+")


def words_of_page(mail: Message) -> str:
    """A page's text without its link and code, which are random (a port or a code may hold
    any digits): what is left must carry no value and no name."""
    return _RANDOM_PARTS.sub("", mail.as_string())


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    sink = Sink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
