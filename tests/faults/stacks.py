"""The two deployments the faults break, as context managers shared by the tests and
benchmarks/faults.py: SQLite on a size-limited file system (where one can be mounted) and a
private PostgreSQL cluster, each with its own Mosquitto, `medmesh serve` (HTTP and MLLP) and
`medmesh ingest-worker`. MEDMESH_FAULTS_KEEP=1 leaves the logs and data in place."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from tests.faults.harness import Stack
from tests.faults.postgres_cluster import PostgresCluster

SMALL_DISK_SIZE = "64m"


def _keep() -> bool:
    return bool(os.environ.get("MEDMESH_FAULTS_KEEP"))


def _broker_dir(workdir: Path, certificates: Path) -> Path:
    directory = workdir / "broker"
    directory.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(certificates / name, directory / name)
    return directory


def mount_small_disk(directory: Path) -> str | None:
    """Mount a tmpfs of SMALL_DISK_SIZE on `directory`; None when done, else why not."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_SIZE}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"cannot mount a size-limited file system here: {result.stderr.strip()}"
    return None


@contextmanager
def sqlite_stack(certificates: Path) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-faults-"))
    disk = workdir / "disk"
    disk.mkdir()
    why_not = mount_small_disk(disk)
    stack = Stack(
        "sqlite",
        f"sqlite:///{disk / 'medmesh.db'}",
        workdir,
        _broker_dir(workdir, certificates),
        small_disk=None if why_not else disk,
        no_small_disk=why_not,
    )
    try:
        asyncio.run(stack.provision())
        stack.start()
        yield stack
    finally:
        stack.stop()
        if not _keep():
            if why_not is None:
                subprocess.run(["umount", str(disk)], check=False)
            shutil.rmtree(workdir, ignore_errors=True)


async def _create_database(cluster: PostgresCluster, name: str) -> None:
    conn = await asyncpg.connect(cluster.url(), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextmanager
def postgres_stack(certificates: Path, bin_dir: Path) -> Iterator[Stack]:
    cluster = PostgresCluster.create(bin_dir)
    workdir = Path(tempfile.mkdtemp(prefix="medmesh-faults-"))
    stack = Stack(
        "postgresql",
        cluster.url("faults"),
        workdir,
        _broker_dir(workdir, certificates),
        cluster=cluster,
        database_name="faults",
    )
    try:
        cluster.start()
        asyncio.run(_create_database(cluster, "faults"))
        asyncio.run(stack.provision())
        stack.start()
        yield stack
    finally:
        stack.stop()
        if not _keep():
            cluster.destroy()
            shutil.rmtree(workdir, ignore_errors=True)
            # The deployment's default key directory (docs/encryption.md) goes with it.
            shutil.rmtree(stack.key_directory(), ignore_errors=True)
