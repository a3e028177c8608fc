"""What the rules' own work costs as a window fills: NEWS2's evaluation over 60 and 95 minutes
of 1 Hz pulse, SpO2 and respiration, and the size and encoding time of a rule state holding
95 minutes of 1 Hz heart rate and SpO2 (a bedside monitor), in process, no database; then the
same monitor through the ingest pipeline and the rule engine on SQLite, 100 readings a batch:
milliseconds a batch (ingest and judging) and bytes of rule state written a batch (counted at
the database driver, so any version of the code can be measured), with no history and with the
rules' window full (after `--minutes` of readings).

Run: `.venv/bin/python benchmarks/rule_state_cost.py` (`--quick`: 5 minutes of readings).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event

from medmesh import provisioning
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.events.bus import InProcessBus
from medmesh.ingest.native import parse_body
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.rules import catalog, news2
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.engine import RuleEngine
from medmesh.rules.series import Point
from medmesh.rules.state import RuleState
from medmesh.store import migrate
from medmesh.store.database import Database

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VALUES = {news2.PULSE: 70.0, news2.SPO2: 97.0, news2.RESPIRATION: 16.0}


def news2_ms(minutes: int) -> float:
    t = thresholds_for(None)
    n = minutes * 60
    inputs = {
        name: [
            Point(NOW - timedelta(seconds=n - i), value, f"{i:036d}", "d" * 36) for i in range(n)
        ]
        for name, value in VALUES.items()
    }
    started = time.perf_counter()
    news2.evaluate("p", inputs, t)
    return (time.perf_counter() - started) * 1000


def state_size() -> tuple[int, int, float]:
    t = thresholds_for(None)
    hr, spo2 = measure_by_key("heart-rate"), measure_by_key("oxygen-saturation")
    assert hr is not None and spo2 is not None
    state = RuleState("p" * 36, NOW - timedelta(hours=3))
    readings = []
    for i in range(95 * 60):
        at = NOW - timedelta(hours=2) + timedelta(seconds=i)
        for measure, value, unit in ((hr, 70.0, "/min"), (spo2, 97.0, "%")):
            readings.append(
                Reading(
                    "d" * 36,
                    f"{measure.key}-{i}",
                    "p" * 36,
                    measure,
                    at,
                    (MeasuredValue(measure.code, value, unit),),
                )
            )
    state.merge_readings(readings)
    state.trim(catalog.lookback(t))
    started = time.perf_counter()
    # Storing it whole, as a full write does (and as every batch did before segments).
    changes = getattr(state, "changes", None)
    size = changes().size if changes is not None else len(state.encode())
    return len(state), size, (time.perf_counter() - started) * 1000


def _body(start: datetime, n: int, batch: int) -> bytes:
    """Batch `n` of a 1 Hz heart-rate and SpO2 monitor: batch/2 seconds, both quantities."""
    readings = []
    for i in range(batch // 2):
        second = n * batch // 2 + i
        at = (start + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
        readings.append(
            {"id": f"hr-{second}", "type": "heart-rate", "time": at, "value": 70, "unit": "/min"}
        )
        readings.append(
            {
                "id": f"sp-{second}",
                "type": "oxygen-saturation",
                "time": at,
                "value": 97,
                "unit": "%",
            }
        )
    return orjson.dumps({"readings": readings})


async def per_batch(minutes: int, batch: int = 100) -> None:
    """ms a batch and rule-state bytes written a batch, first 10 batches and last 10."""
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(f"sqlite:///{Path(scratch) / 'cost.db'}")
        written = [0]

        def count(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
            if "rule_state" in statement and not statement.lstrip().upper().startswith("SELECT"):
                rows = params if isinstance(params, list) else [params]
                for row in rows:
                    values = row.values() if isinstance(row, dict) else row
                    written[0] += sum(len(v) for v in values if isinstance(v, bytes | memoryview))

        event.listen(db.engine.sync_engine, "before_cursor_execute", count)
        try:
            await migrate.upgrade(db)
            patient = await provisioning.create_patient(db, family="M", given="B", identifier="M-1")
            device = await provisioning.register_device(db, display_name="monitor")
            start = datetime(2026, 6, 1, tzinfo=UTC)
            await provisioning.assign_device(db, device.device_id, patient.id, start - timedelta(1))
            pipe = IngestPipeline(db)
            engine = RuleEngine(db, InProcessBus())
            pipe.on_committed(engine.on_committed)
            await pipe.after_commit.start()
            batches = minutes * 60 * 2 // batch
            timings: list[tuple[float, int]] = []
            for n in range(batches):
                before, started = written[0], time.perf_counter()
                await pipe.ingest(
                    device.device_id, "http", parse_body(_body(start, n, batch), 1000)
                )
                await pipe.after_commit.settled()
                timings.append(((time.perf_counter() - started) * 1000, written[0] - before))
            await pipe.after_commit.stop()
        finally:
            await db.dispose()
    for label, part in (("no history", timings[1:11]), (f"{minutes} min in", timings[-10:])):
        ms = sorted(t for t, _ in part)[len(part) // 2]
        size = sum(b for _, b in part) / len(part)
        print(
            f"1 Hz heart rate + SpO2, {batch} readings a batch, SQLite, {label}: "
            f"{ms:.1f} ms a batch (median of {len(part)}), {size:,.0f} B of rule state written"
            " a batch"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=int, default=95, help="of readings sent (default 95)")
    parser.add_argument("--quick", action="store_true", help="5 minutes of readings")
    args = parser.parse_args()
    for minutes in (60, 95):
        print(
            f"NEWS2 evaluate, {minutes} min of 1 Hz pulse, SpO2, respiration: "
            f"{news2_ms(minutes):.1f} ms"
        )
    readings, size, ms = state_size()
    print(
        f"rule state, 95 min of 1 Hz heart rate and SpO2: {readings} readings, "
        f"{size:,} bytes encoded ({size / readings:.0f} B a reading) in {ms:.1f} ms"
    )
    asyncio.run(per_batch(5 if args.quick else args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
