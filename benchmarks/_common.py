"""Helpers every benchmark script shares: ports, processes, the broker binary, a scratch
PostgreSQL database, percentiles and the machine facts printed with each run's figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    """Print a line at once (progress shows while a phase runs)."""
    print(message, flush=True)


def venv_python() -> str:
    """The project's virtualenv interpreter (the one servers and workers should run under)."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def _proc_stat(path: Path) -> tuple[str, list[str]] | None:
    """A /proc stat file's command name and the fields after it (state first); None when the
    process is gone or /proc is not there."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    return stat[stat.find("(") + 1 : stat.rfind(")")], stat.rsplit(")", 1)[1].split()


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    found = None if pid is None else _proc_stat(Path(f"/proc/{pid}/stat"))
    if found is None:
        return None
    fields = found[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The live children of a process (Linux /proc)."""
    kids: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(kid) for kid in children.read_text().split()]
        except OSError:
            continue
    return kids


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def nearest_rank(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; timeouts entered as +inf show when a percentile reaches them."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def percentile(values: Sequence[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method); the value itself for a single sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """`--backend` (repeatable; default both) and `--postgres-url`."""
    parser.add_argument(
        "--backend",
        action="append",
        choices=("sqlite", "postgresql"),
        help="backend to run (repeatable; default both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"PostgreSQL maintenance database (default {DEFAULT_POSTGRES_URL})",
    )


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running task, so child processes are stopped and data removed."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


class PostgresUnreachable(Exception):
    """The PostgreSQL server could not be reached; the message says where and why."""


@asynccontextmanager
async def scratch_postgres(url: str) -> AsyncIterator[str]:
    """A fresh database on the server of `url` (its maintenance database), dropped at the end.

    Raises PostgresUnreachable, before anything is created, when the server does not answer.
    """
    name = f"medmesh_bench_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(admin_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise PostgresUnreachable(
            f"postgresql: not reachable at {url} ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin_dsn(url), timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def on_each_backend(
    backends: Sequence[str],
    postgres_url: str,
    run: Callable[[str, str, Path], Awaitable[None]],
    skipped: list[str],
) -> None:
    """`run(backend, url, workdir)` on SQLite (a file in a temporary directory), then on a
    scratch PostgreSQL database; an unreachable PostgreSQL is skipped, the reason in `skipped`."""
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
            await run("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp))
    if "postgresql" in backends:
        try:
            async with scratch_postgres(postgres_url) as url:
                with tempfile.TemporaryDirectory(prefix="medmesh-bench-") as tmp:
                    await run("postgresql", url, Path(tmp))
        except PostgresUnreachable as exc:
            skipped.append(str(exc))
            log(f"skipped: {exc}")


async def print_machine(
    *, postgres_url: str | None = None, broker: bool = False, python: str = ""
) -> None:
    """Facts that make the figures comparable between machines: CPUs, Python, load, servers."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    log(f"machine:    nproc {affinity} (cpu_count {os.cpu_count()}), {platform.platform()}")
    log(f"python:     {platform.python_version()} ({sys.executable}){python}")
    log(f"load:       {load_average()}")
    if broker:
        log(f"broker:     {mosquitto_version()}")
    log(f"sqlite:     {sqlite3.sqlite_version}")
    if postgres_url is not None:
        log(f"postgresql: {await postgres_version(postgres_url)}")


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


@dataclass
class Broker:
    """A private Mosquitto on a free port of 127.0.0.1, anonymous, without persistence."""

    directory: Path
    max_queued: int
    max_inflight: int = 500
    stop_timeout: float = 15.0
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the configuration, start the broker and wait until it accepts connections."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("the mosquitto broker is not installed")
        self.port = free_port()
        config = self.directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"max_inflight_messages {self.max_inflight}",
            f"max_queued_messages {self.max_queued}",
            "user root",
        ]
        config.write_text("\n".join(lines) + "\n")
        log_path = self.directory / "mosquitto.log"
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script, which stops it in order
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start:\n{tail(log_path)}")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        """Stop the broker (its sessions go with it: persistence is off)."""
        if self.process is not None:
            stop_process(self.process, timeout=self.stop_timeout)
            self.process = None


@asynccontextmanager
async def profiled(
    pid: int, out: Path | None, *, rate: int = 100, subprocesses: bool = False
) -> AsyncIterator[None]:
    """`py-spy record` of process `pid` (and its children with `subprocesses`, e.g. `serve
    --workers N`) while the block runs, written as collapsed stacks to `out`; nothing when
    `out` is None. py-spy comes with the dev dependencies, beside the venv's python."""
    if out is None:
        yield
        return
    spy = Path(venv_python()).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    options = ["--subprocesses"] if subprocesses else []
    process = await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--pid",
        str(pid),
        *options,
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(0.5)  # attached before the block starts
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        _, stderr = await process.communicate()
        if await asyncio.to_thread(out.exists):
            log(f"profile: {out}")
        else:
            reason = stderr.decode(errors="replace").strip().splitlines()[:1]
            log(f"profile: none written to {out} (py-spy: {' '.join(reason) or 'no reason given'})")


def postgres_cpu() -> float | None:
    """User + system CPU seconds used so far by the local PostgreSQL cluster: its live
    processes (backends, WAL writer, checkpointer, autovacuum) plus the exited backends the
    postmaster has reaped. Differences over a phase give what the database spent on it; the
    whole cluster is counted, so other databases' work on the machine counts too. None
    where /proc is not readable or no `postgres` process is seen (a remote server)."""
    total = 0
    seen = False
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        found = _proc_stat(stat_path)
        if found is None or found[0] != "postgres":
            continue
        fields = found[1]
        seen = True
        total += int(fields[11]) + int(fields[12])
        parent = _proc_stat(Path(f"/proc/{fields[1]}/stat"))
        if parent is None or parent[0] != "postgres":  # the postmaster: its reaped children
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def process_tree_cpu(pid: int | None) -> float | None:
    """`process_cpu` of a process and its live descendants (uvicorn's worker processes)."""
    own = process_cpu(pid)
    if own is None or pid is None:
        return own
    return own + sum(process_tree_cpu(kid) or 0.0 for kid in child_pids(pid))
