"""C-STORE into medmesh next to dcmtk's own `storescp`, the same files in the same run.

Both receivers run as their own process on 127.0.0.1: `medmesh dicom-worker` (the DICOM
listener alone; each instance read, matched to the patient, sealed and committed before the
answer) and dcmtk's `storescp` writing the files to a directory, with its largest receive PDU
(128 KiB; medmesh offers 256 KiB, and storescp's default 16 KiB alone halves its rate).
dcmtk's `storescu` sends the same synthetic MR series (N slices of size x size, 16-bit) to each
over one association, three rounds each with fresh UIDs (so medmesh stores every round; its
duplicate check would make a repeat cheap). The figure is medmesh's instances/s and MB/s, and
its ratio to storescp's.

Run: `.venv/bin/python benchmarks/dicom_store.py` (`--quick` for a short run; `--backend`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    add_backend_options,
    free_port,
    log,
    on_each_backend,
    print_machine,
    stop_process,
    tail,
)
from medmesh import provisioning
from medmesh.imaging.synthetic import mr_series
from medmesh.store import migrate
from medmesh.store.database import Database

ROUNDS = 3


def write_series(folder: Path, round_: int, slices: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, content in enumerate(
        mr_series(
            patient_id="BENCH-1",
            issuer=None,
            patient_name=f"Bench^Round{round_}",
            slices=slices,
            size=size,
            seed_suffix=str(round_),
        )
    ):
        path = folder / f"{n:04d}.dcm"
        path.write_bytes(content)
        files.append(path)
    return files


def wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def send(files: list[Path], port: int, called: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-500:]}")
    return elapsed


def rate(label: str, files: list[list[Path]], seconds: list[float]) -> tuple[float, float]:
    count = sum(len(f) for f in files)
    megabytes = sum(p.stat().st_size for f in files for p in f) / 1e6
    total = sum(seconds)
    log(
        f"  {label:<28} {count / total:8.1f} instances/s  {megabytes / total:7.1f} MB/s"
        f"  ({count} in {total:.2f} s)"
    )
    return count / total, megabytes / total


async def provision(url: str) -> None:
    database = Database(url)
    await migrate.upgrade(database)
    await provisioning.create_patient(database, family="Bench", given="Mark", identifier="BENCH-1")
    await database.dispose()


async def run_backend(backend: str, url: str, workdir: Path, slices: int, size: int) -> None:
    await provision(url)
    await asyncio.to_thread(measure, backend, url, workdir, slices, size)


def measure(backend: str, url: str, workdir: Path, slices: int, size: int) -> None:
    rounds_medmesh = [write_series(workdir / f"m{r}", r, slices, size) for r in range(ROUNDS)]
    rounds_dcmtk = [write_series(workdir / f"d{r}", 10 + r, slices, size) for r in range(ROUNDS)]
    received = workdir / "storescp"
    received.mkdir()
    dcmtk_port, medmesh_port = free_port(), free_port()
    storescp = subprocess.Popen(
        [
            "storescp",
            "-aet",
            "STORESCP",
            "--max-pdu",
            "131072",
            "-od",
            str(received),
            str(dcmtk_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "MEDMESH_DATABASE_URL": url,
        "MEDMESH_DICOM_ALLOWED_AES": "BENCH@127.0.0.1",
        "MEDMESH_AUTO_MIGRATE": "false",
        "MEDMESH_ALERT_CHECK_INTERVAL_SECONDS": "0",
    }
    worker_log = workdir / "dicom-worker.log"
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "medmesh"), "dicom-worker", "--port", str(medmesh_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=worker_log.open("wb"),
        cwd=workdir,
    )
    try:
        wait_port(dcmtk_port)
        try:
            wait_port(medmesh_port, timeout=120)
        except RuntimeError:
            raise RuntimeError(f"medmesh dicom-worker did not start:\n{tail(worker_log)}") from None
        send(rounds_dcmtk[0][:2], dcmtk_port, "STORESCP")  # warm both up
        dcmtk_seconds = [send(f, dcmtk_port, "STORESCP") for f in rounds_dcmtk]
        medmesh_seconds = [send(f, medmesh_port, "MEDMESH") for f in rounds_medmesh]
    finally:
        stop_process(worker)
        stop_process(storescp)
    log(f"{backend}: {slices} slices of {size}x{size} x {ROUNDS} rounds, one association each")
    limit, limit_mb = rate("dcmtk storescp (the limit)", rounds_dcmtk, dcmtk_seconds)
    ours, ours_mb = rate("medmesh dicom-worker", rounds_medmesh, medmesh_seconds)
    log(
        f"  ratio medmesh / storescp: {ours / limit:.2f} (instances), {ours_mb / limit_mb:.2f} (MB)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI smoke)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    add_backend_options(parser)
    args = parser.parse_args()
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        sys.exit("dcmtk is missing (apt install dcmtk)")
    slices, size = (10, 64) if args.quick else (args.slices, args.size)
    await print_machine(postgres_url=args.postgres_url)
    skipped: list[str] = []

    async def run(backend: str, url: str, workdir: Path) -> None:
        await run_backend(backend, url, workdir, slices, size)

    await on_each_backend(args.backend or ["sqlite", "postgresql"], args.postgres_url, run, skipped)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        asyncio.run(main())
