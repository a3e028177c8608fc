"""Stopping a process's workers: a stop is never lost, and one that hangs fails and says where.

A CI run once hung for half an hour in an app's shutdown: a worker's loop waited between rounds
with `asyncio.wait_for(wake.wait(), …)`, which on Python 3.11 loses a cancellation arriving
as the event is set, so its `stop` waited for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from medmesh.workers import CallWorker, Workers, WorkersDidNotStop, wait_for_wake


class Polling:
    """A worker shaped like medmesh's pollers: a round, then a wait for a wake or a timeout."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.rounds = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _loop(self) -> None:
        while True:
            self.rounds += 1
            self.wake.clear()
            await wait_for_wake(self.wake, 60)


async def test_a_stop_that_arrives_as_the_poller_is_woken_still_stops_it() -> None:
    worker = Polling()
    await worker.start()
    await asyncio.sleep(0)  # the loop is now waiting for its wake
    for _ in range(20):
        # Woken and stopped in the same turn of the event loop: the race that was lost.
        rounds = worker.rounds
        worker.wake.set()
        async with asyncio.timeout(2):
            await worker.stop()
        assert worker.task is not None and worker.task.cancelled()
        assert worker.rounds == rounds  # no round after the stop
        await worker.start()
        await asyncio.sleep(0)
    await worker.stop()


async def test_the_wait_ends_at_its_timeout_or_at_the_wake_whichever_is_first() -> None:
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await wait_for_wake(wake, 0.05)
    assert loop.time() - began >= 0.04
    loop.call_later(0.01, wake.set)
    began = loop.time()
    await wait_for_wake(wake, 30)
    assert loop.time() - began < 5


async def test_a_worker_that_does_not_stop_is_named_and_the_others_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped: list[str] = []
    never = asyncio.Event()

    async def hangs_in_stop() -> None:
        await never.wait()

    async def noted(name: str) -> None:
        stopped.append(name)

    async def nothing() -> None:
        return None

    workers = Workers(stop_grace=0.1)
    await workers.start("first", CallWorker(nothing, lambda: noted("first")))
    await workers.start("stuck", CallWorker(nothing, hangs_in_stop))
    await workers.start("last", CallWorker(nothing, lambda: noted("last")))
    with (
        caplog.at_level(logging.ERROR, logger="medmesh.workers"),
        pytest.raises(WorkersDidNotStop) as raised,
    ):
        await workers.stop()
    assert raised.value.names == ["stuck"]
    assert stopped == ["last", "first"]  # newest first, the stuck one passed over
    logged = caplog.text
    assert "stuck did not stop within" in logged
    # The log says where the task that waited was suspended: in the stuck stop, at its wait.
    assert "hangs_in_stop" in logged and "test_workers.py" in logged
