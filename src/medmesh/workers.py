"""Background work a process runs beside its requests (listeners, consumers, periodic checks,
senders), started and stopped in one place, in one order, by `Services`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import CodeType
from typing import Any, Protocol

log = logging.getLogger(__name__)

# How long one worker may take to stop before the process gives up on it and stops the rest.
STOP_GRACE_SECONDS = 30.0


class WorkersDidNotStop(RuntimeError):
    """Raised by `Workers.stop`, after the others stopped, naming those that did not in time."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"did not stop in time: {', '.join(names)}")
        self.names = names


async def wait_for_wake(wake: asyncio.Event, seconds: float) -> None:
    """Wait until `wake` is set or `seconds` have passed, whichever comes first.

    A worker's loop waits here between rounds. `asyncio.wait_for(wake.wait(), …)` would run
    the wait as a task of its own, and on Python 3.11 a cancellation that arrives as that task
    finishes (the event set as the worker is stopped) is lost: the loop goes on and `stop`
    waits for ever. `asyncio.timeout` waits in the caller's own task and loses none."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()


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

    def __init__(self, stop_grace: float = STOP_GRACE_SECONDS) -> None:
        self._started: list[tuple[str, Worker]] = []
        self._stop_grace = stop_grace

    async def start(self, name: str, worker: Worker) -> None:
        """Start `worker`; if it fails, stop those already started and raise."""
        try:
            await worker.start()
        except BaseException:
            with contextlib.suppress(WorkersDidNotStop):  # logged; the start's error says more
                await self.stop()
            raise
        self._started.append((name, worker))
        log.debug("%s started", name)

    async def stop(self) -> None:
        """Stop every started worker, newest first; one failing to stop, or not stopping
        within the grace, does not keep the others running. Raises `WorkersDidNotStop` at the
        end if one did not stop in time (logged with where the process's tasks were waiting),
        so that a shutdown that hangs becomes one that fails and says where."""
        late: list[str] = []
        while self._started:
            name, worker = self._started.pop()
            # A task of its own, so that where a late stop waits can be told before it is
            # cancelled.
            stopping = asyncio.create_task(worker.stop(), name=f"stopping {name}")
            try:
                await asyncio.wait([stopping], timeout=self._stop_grace)
            except asyncio.CancelledError:  # the stop itself is called off: so is this one
                stopping.cancel()
                raise
            if not stopping.done():
                log.error(
                    "%s did not stop within %g s; the tasks still waiting:\n%s",
                    name,
                    self._stop_grace,
                    waiting_tasks(),
                )
                late.append(name)
                stopping.cancel()
                await asyncio.wait([stopping], timeout=1.0)  # to unwind, not to wait again
            elif not stopping.cancelled() and (error := stopping.exception()) is not None:
                log.error("%s did not stop cleanly (%s)", name, type(error).__name__)
        if late:
            raise WorkersDidNotStop(late)


def waiting_tasks() -> str:
    """Each task of the running loop but the caller's, with the chain of awaits it is
    suspended in: code locations only (names and line numbers), never values."""
    current = asyncio.current_task()
    lines = []
    for task in asyncio.all_tasks():
        if task is current:
            continue
        chain = " > ".join(_awaits(task.get_coro())) or "?"
        lines.append(f"  {task.get_name()}: {chain}")
    return "\n".join(sorted(lines))


def _awaits(coro: Any) -> list[str]:
    """Where a coroutine and what it awaits are suspended, outermost first."""
    where: list[str] = []
    while coro is not None and len(where) < 50:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        frame = frame or getattr(coro, "gi_frame", None)
        if frame is not None:
            code: CodeType = frame.f_code
            where.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )
    return where
