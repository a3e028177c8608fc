"""The faults: each breaks one part of the deployment and repairs it as an operator or a
supervisor would. Each step runs in a thread where processes are started and waited for."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import asyncpg

from tests.faults.harness import START_TIMEOUT, Fault, Stack


async def _nothing(_stack: Stack) -> None:
    return None


def kill_server() -> Fault:
    async def inject(stack: Stack) -> None:
        assert stack.server is not None
        await asyncio.to_thread(stack.server.kill)

    async def repair(stack: Stack) -> None:  # the supervisor (systemd) starts it again
        assert stack.server is not None
        await asyncio.to_thread(stack.server.start, START_TIMEOUT)

    return Fault("kill -9 medmesh serve", inject, repair, hold=0.5)


def kill_worker() -> Fault:
    async def inject(stack: Stack) -> None:
        assert stack.worker is not None
        await asyncio.to_thread(stack.worker.kill)

    async def repair(stack: Stack) -> None:
        assert stack.worker is not None
        await asyncio.to_thread(stack.worker.start, START_TIMEOUT)

    return Fault("kill -9 ingest worker", inject, repair, hold=0.5)


def restart_broker() -> Fault:
    async def inject(stack: Stack) -> None:
        assert stack.broker is not None
        await asyncio.to_thread(stack.broker.stop)

    async def repair(stack: Stack) -> None:
        assert stack.broker is not None
        await asyncio.to_thread(stack.broker.start)

    return Fault("Mosquitto stopped, restarted", inject, repair)


def restart_postgres() -> Fault:
    async def repair(stack: Stack) -> None:
        await asyncio.to_thread(stack.cluster.restart)

    return Fault("PostgreSQL restarted", _nothing, repair, hold=0.5)


def postgres_down() -> Fault:
    async def inject(stack: Stack) -> None:
        await asyncio.to_thread(stack.cluster.stop)

    async def repair(stack: Stack) -> None:
        await asyncio.to_thread(stack.cluster.start)

    return Fault("PostgreSQL refusing connections", inject, repair)


def exhaust_connections() -> Fault:
    """Another client takes every connection the server allows (max_connections) and
    medmesh's own connections are cut: until it lets go, each new connection medmesh opens
    is refused with "too many clients"."""
    held: list[Any] = []

    async def inject(stack: Stack) -> None:

        url = stack.cluster.url(stack.database_name)
        first = await asyncpg.connect(url, timeout=10)
        held.append(first)
        await first.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            stack.database_name,
        )
        while True:
            try:
                held.append(await asyncpg.connect(url, timeout=10))
            except asyncpg.TooManyConnectionsError:
                break
            except asyncpg.CannotConnectNowError:
                await asyncio.sleep(0.05)
        # Connections medmesh made in between are cut too: only the hog is left.
        await first.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> ALL($2::int[])",
            stack.database_name,
            [c.get_server_pid() for c in held],
        )

    async def repair(_stack: Stack) -> None:
        while held:
            await held.pop().close()

    return Fault("connections exhausted", inject, repair, hold=3.0)


def fill_disk(directory: Path) -> Fault:
    """Fill the (size-limited) file system of the SQLite database, then free it."""
    filler = directory / "filler.bin"

    def fill() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # down to the last byte
                with contextlib.suppress(OSError):  # ENOSPC: full at this block size
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)

    async def inject(_stack: Stack) -> None:
        await asyncio.to_thread(fill)

    async def repair(_stack: Stack) -> None:
        filler.unlink(missing_ok=True)

    return Fault("SQLite disk full", inject, repair, hold=3.0)
