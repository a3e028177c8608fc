"""CPU time per reading of the ingest path (validate, seal, store, commit) and of judging
(the alert rules after commit), in one process on PostgreSQL: `--senders` concurrent senders
of `--batch`-reading batches of heart rate through `IngestPipeline` with the rule engine
listening. CPU time (not wall time) is what a loaded, shared machine disturbs least, so runs of
two commits can be compared (`PYTHONPATH=<export of a commit>/src`).

Run: `.venv/bin/python benchmarks/ingest_cpu.py` (`--quick` for a smoke run).
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from medmesh import provisioning
from medmesh.domain.registry import DeviceAssignment
from medmesh.events.bus import InProcessBus
from medmesh.ingest.native import parse_body
from medmesh.ingest.pipeline import DeviceBatch, IngestPipeline
from medmesh.rules.engine import RuleEngine
from medmesh.store import migrate
from medmesh.store.database import Database


async def measure(url_base: str, batch: int, batches: int, senders: int) -> None:
    name = f"cpuing_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{url_base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{url_base}/{name}"
    db = Database(url)
    try:
        await migrate.upgrade(db)
        devs = []
        for k in range(senders):
            p = await provisioning.create_patient(db, family="C", given="P", identifier=f"C-{k}")
            c = await provisioning.register_device(db, display_name=f"c{k}")
            await provisioning.assign_device(
                db, c.device_id, p.id, datetime(2020, 1, 1, tzinfo=UTC)
            )
            devs.append(c.device_id)
        pipe = IngestPipeline(db)
        eng = RuleEngine(db, InProcessBus())
        if hasattr(pipe, "on_committed_round"):
            pipe.on_committed_round(eng.on_committed_round)
        else:
            pipe.on_committed(eng.on_committed)
        await pipe.after_commit.start()
        start = datetime(2026, 6, 1, tzinfo=UTC)

        def body(k, n):
            return orjson.dumps(
                {
                    "readings": [
                        {
                            "id": f"m-{n * batch + i}",
                            "type": "heart-rate",
                            "time": (start + timedelta(seconds=n * batch + i)).strftime(
                                "%Y-%m-%dT%H:%M:%SZ"
                            ),
                            "value": 60 + i % 30,
                            "unit": "/min",
                        }
                        for i in range(batch)
                    ]
                }
            )

        async def sender(k):
            for n in range(batches):
                await pipe.ingest(devs[k], "http", parse_body(body(k, n), 1000))

        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(sender(k) for k in range(senders)))
        c1 = time.process_time()
        await pipe.after_commit.settled()
        c2, w2 = time.process_time(), time.perf_counter()
        n = batch * batches * senders
        print(
            f"batch {batch}: {n} readings; CPU/reading ingest {1e6 * (c1 - c0) / n:.0f} us, "
            f"ingest+judging {1e6 * (c2 - c0) / n:.0f} us; wall {n / (w2 - w0):,.0f} readings/s"
        )
        await pipe.after_commit.stop()
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def parse_and_validate(batch: int, batches: int) -> None:
    """The Python of the 202 path that is per reading and needs no database: parsing a native
    body and validating its readings into `Reading`s (what `IngestPipeline` does before it
    stores them), one process, CPU time per reading."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    pipe = IngestPipeline(None, clock=lambda: start + timedelta(days=1))  # type: ignore[arg-type]
    histories = {"d": [DeviceAssignment("d", "p", datetime(2020, 1, 1, tzinfo=UTC))]}
    bodies = [
        orjson.dumps(
            {
                "readings": [
                    {
                        "id": f"m-{n * batch + i}",
                        "type": "heart-rate",
                        "time": (start + timedelta(seconds=n * batch + i)).strftime(
                            "%Y-%m-%dT%H:%M:%SZ"
                        ),
                        "value": 60 + i % 30,
                        "unit": "/min",
                    }
                    for i in range(batch)
                ]
            }
        )
        for n in range(batches)
    ]
    now = pipe.now()
    c0 = time.process_time()
    for body in bodies:
        items = parse_body(body, 1000, "d")
    c1 = time.process_time()
    for body in bodies:
        items = parse_body(body, 1000, "d")
        device_batch = DeviceBatch("d", "http", items)
        for item in items:
            pipe._validate(device_batch, item, histories, now)
    c2 = time.process_time()
    n = batch * batches
    print(
        f"batch {batch}, no database: {n} readings; CPU/reading parse {1e6 * (c1 - c0) / n:.1f} us,"
        f" parse+validate {1e6 * (c2 - c1) / n:.1f} us"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        default=os.environ.get("MEDMESH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL without a database; the run creates and drops its own",
    )
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = [(100, 2), (1, 5)] if args.quick else [(100, 25), (1, 200)]
    parse_and_validate(100, 2 if args.quick else 500)
    for batch, batches in rounds:
        asyncio.run(measure(args.postgres, batch, batches, args.senders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
