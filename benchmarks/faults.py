"""Faults under load, longer than the test suite's (tests/faults): kill -9 of `medmesh serve`
and of the ingest worker, Mosquitto stopped and restarted, a full SQLite disk, PostgreSQL
restarted, refusing connections and out of connections, each under steady HTTP + MQTT + MLLP
load, with a ledger of every reading sent and acknowledged. Prints the fault table: sent,
acknowledged, stored, lost, duplicated and the seconds until every channel acknowledged again.

The deployments are private (a Mosquitto and, for PostgreSQL, a cluster made with initdb on a
free port), so the machine's shared services are never stopped. Run as root to mount the
size-limited file system of the disk-full fault.

    .venv/bin/python benchmarks/faults.py            # every fault, 10 s + 20 s of load each
    .venv/bin/python benchmarks/faults.py --quick    # SQLite: a broker restart, seconds of load
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import REPO, log, print_machine

sys.path.insert(0, str(REPO))

from tests.faults.catalogue import (
    exhaust_connections,
    fill_disk,
    kill_server,
    kill_worker,
    postgres_down,
    restart_broker,
    restart_postgres,
)
from tests.faults.harness import Fault, Stack, run_fault
from tests.faults.ledger import FaultRow, fault_table
from tests.faults.postgres_cluster import postgres_bin
from tests.faults.stacks import postgres_stack, sqlite_stack
from tests.mosquitto_broker import MAKE_CERTS

PROCESS_FAULTS: list[Callable[[], Fault]] = [kill_server, kill_worker, restart_broker]
POSTGRES_FAULTS = [*PROCESS_FAULTS, restart_postgres, postgres_down, exhaust_connections]


def _run_all(stack: Stack, faults: Sequence[Fault], opts: argparse.Namespace) -> list[FaultRow]:
    rows = []
    for fault in faults:
        log(f"{stack.backend}: {fault.name} …")
        row, ledger = asyncio.run(run_fault(stack, fault, before=opts.before, after=opts.after))
        log(f"  {row}")
        if ledger.lost:
            log(f"  lost, e.g.: {ledger.lost[:5]}")
        rows.append(row)
    return rows


def main(opts: argparse.Namespace) -> int:
    # SIGTERM unwinds like an exception, so the private broker, cluster and processes stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(print_machine(broker=True))
    with tempfile.TemporaryDirectory(prefix="medmesh-faults-certs-") as certs:
        subprocess.run([str(MAKE_CERTS), certs, "localhost"], check=True, capture_output=True)
        rows: list[FaultRow] = []
        with sqlite_stack(Path(certs)) as stack:
            if opts.quick:
                faults = [restart_broker()]
            else:
                faults = [f() for f in PROCESS_FAULTS]
                if stack.small_disk is not None:
                    faults.append(fill_disk(stack.small_disk))
                else:
                    log(f"skipped: SQLite disk full: {stack.no_small_disk}")
            rows += _run_all(stack, faults, opts)
        bin_dir = postgres_bin()
        if not opts.quick and bin_dir is None:
            log("skipped: postgresql: the server binaries (initdb, pg_ctl) are not installed")
        elif not opts.quick and bin_dir is not None:
            with postgres_stack(Path(certs), bin_dir) as stack:
                rows += _run_all(stack, [f() for f in POSTGRES_FAULTS], opts)
    log(
        "load: HTTP batches of 10 readings from 2 senders, MQTT messages of 10 readings, "
        f"one-OBX ORU^R01 over MLLP; {opts.before:g} s before each fault, {opts.after:g} s "
        "after its repair; recovery = seconds from the repair until every channel has "
        "acknowledged again"
    )
    log(fault_table(rows))
    bad = [r for r in rows if r.lost or r.duplicated or r.unexplained or not r.alert_seen]
    return 1 if bad else 0


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short fault on SQLite")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.before, opts.after = 1.0, 2.0
    return opts


if __name__ == "__main__":
    sys.exit(main(parse_options()))
