"""Background work a process runs beside its requests (listeners, consumers, periodic checks,
senders), started and stopped in one place, in one order, by `Services`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Worker(Protocol):
    """What `Services` starts and stops. `start` returns once the worker is running (a
    listener is listening); `stop` returns once it has finished the work in hand."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class CallWorker:
    """A worker from two calls, for things whose start takes arguments (a port to listen on)."""

    def __init__(
        self, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
    ) -> None:
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        await self._start()

    async def stop(self) -> None:
        await self._stop()


class Workers:
    """Workers started in the order added and stopped in the reverse order, so each one stops
    while what it relies on (added before it) is still running."""

    def __init__(self) -> None:
        self._started: list[tuple[str, Worker]] = []

    async def start(self, name: str, worker: Worker) -> None:
        """Start `worker`; if it fails, stop those already started and raise."""
        try:
            await worker.start()
        except BaseException:
            await self.stop()
            raise
        self._started.append((name, worker))
        log.debug("%s started", name)

    async def stop(self) -> None:
        """Stop every started worker, newest first; one failing to stop does not keep the
        others running."""
        while self._started:
            name, worker = self._started.pop()
            try:
                await worker.stop()
            except Exception as exc:
                log.error("%s did not stop cleanly (%s)", name, type(exc).__name__)
