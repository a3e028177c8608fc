"""Helpers every benchmark script shares: ports, the broker binary, PostgreSQL admin access and
the machine facts printed with each run's figures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    """The mosquitto broker's path, if installed."""
    if found := shutil.which("mosquitto"):
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def mosquitto_version() -> str:
    """The first line of `mosquitto -h`, e.g. `mosquitto version 2.0.11`."""
    binary = mosquitto_binary()
    if binary is None:
        return "not installed"
    result = subprocess.run([binary, "-h"], capture_output=True, check=False, timeout=10)
    first = (result.stdout or result.stderr).decode(errors="replace").splitlines()
    return f"{first[0] if first else '?'} ({binary})"


def admin_dsn(url: str) -> str:
    """`url` as a plain DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def postgres_version(url: str) -> str:
    """The PostgreSQL server's version, or why it is not known."""
    try:
        conn = await asyncpg.connect(admin_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"not reachable ({type(exc).__name__})"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def load_average() -> str:
    """The 1/5/15-minute load average: other work on the machine skews every figure."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"
