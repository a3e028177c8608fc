"""The deployments the fault tests break: one on SQLite (on a size-limited file system where
one can be mounted), one on a private PostgreSQL cluster; each with its own Mosquitto, a
`medmesh serve` (HTTP and MLLP) and a `medmesh ingest-worker`. The table of every fault run
is printed at the end of the session."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import IN_CI
from tests.faults.harness import FaultRow, Stack, fault_table
from tests.faults.postgres_cluster import PostgresCluster, postgres_bin
from tests.mosquitto_broker import mosquitto_binary

ROWS: list[FaultRow] = []
TMPFS_SIZE = "64m"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(fault_table(ROWS))


@pytest.fixture(scope="session")
def fault_rows() -> list[FaultRow]:
    return ROWS


def _broker_dir(workdir: Path, certificates: Path) -> Path:
    directory = workdir / "broker"
    directory.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(certificates / name, directory / name)
    return directory


def mount_small_disk(directory: Path) -> str | None:
    """Mount a tmpfs of TMPFS_SIZE on `directory`; None when done, else why it could not."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"cannot mount a size-limited file system here: {result.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def sqlite_stack(broker_certificates: Path) -> Iterator[Stack]:
    mosquitto_binary()  # skips without the broker, fails in CI
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-faults-"))
    disk = workdir / "disk"
    disk.mkdir()
    why_not = mount_small_disk(disk)
    stack = Stack(
        "sqlite", f"sqlite:///{disk / 'medmesh.db'}", workdir, _broker_dir(workdir, broker_certificates)
    )
    stack.small_disk = None if why_not else disk
    stack.no_small_disk = why_not
    try:
        asyncio.run(stack.provision())
        stack.start()
        yield stack
    finally:
        stack.stop()
        if os.environ.get("MEDMESH_FAULTS_KEEP"):  # to read the logs afterwards
            return
        if why_not is None:
            subprocess.run(["umount", str(disk)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


async def _create_database(cluster: PostgresCluster, name: str) -> None:
    conn = await asyncpg.connect(cluster.url(), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def postgres_stack(broker_certificates: Path) -> Iterator[Stack]:
    mosquitto_binary()
    bin_dir = postgres_bin()
    if bin_dir is None:
        message = "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI requires them (see .ci/run)")
        pytest.skip(message)
    cluster = PostgresCluster.create(bin_dir)
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-faults-"))
    try:
        cluster.start()
        asyncio.run(_create_database(cluster, "faults"))
        stack = Stack(
            "postgresql",
            cluster.url("faults"),
            workdir,
            _broker_dir(workdir, broker_certificates),
            cluster=cluster,
            database_name="faults",
        )
        try:
            asyncio.run(stack.provision())
            stack.start()
            yield stack
        finally:
            stack.stop()
    finally:
        if not os.environ.get("MEDMESH_FAULTS_KEEP"):
            cluster.destroy()
            shutil.rmtree(workdir, ignore_errors=True)
