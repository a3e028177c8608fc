"""What middlewares that act after a request need to know of its answer."""

from __future__ import annotations

from starlette.types import Message, Send


class StatusRecorder:
    """An ASGI `send` that passes messages on and notes the response's status code (500 until
    one is sent: an app that raises before answering)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
