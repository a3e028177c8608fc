"""Every script in benchmarks/ runs in its --quick mode, exits 0 and prints its figures.

The scripts are found by globbing benchmarks/*.py (private modules such as _common.py left
out), so a new benchmark is covered the day it is added. They run as subprocesses, a few at a
time, started together by one fixture so the whole module takes about as long as its slowest
scripts. A benchmark that uses PostgreSQL or Mosquitto skips locally without it and fails in CI
(CI set), as the other integration tests do.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import IN_CI, POSTGRES_URL, _admin_dsn
from tests.mosquitto_broker import mosquitto_binary

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
AT_ONCE = 4  # scripts running together: most of their time is server start-up and fsync
TIMEOUT = 240.0  # per script, queueing included
# A figure as the scripts print them: a number and its unit (12.3 ms, 85 µs, 1,234/s, 45 MiB, 30%).
FIGURE = re.compile(r"\d[\d,.]*\s*(µs|ms|s|/s|MiB|%)\b|\d[\d,.]*\s*(records|messages|readings)/s")


@dataclass(frozen=True, slots=True)
class QuickRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _uses(script: Path) -> set[str]:
    """The services a script talks to, as its source names them."""
    source = script.read_text()
    return {s for s in ("postgres", "mosquitto") if s in source}


def _run(script: Path) -> QuickRun:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=BENCHMARKS.parent,
        env={**os.environ, "MEDMESH_TEST_POSTGRES_URL": POSTGRES_URL},
        check=False,
    )
    return QuickRun(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


async def _postgres_reachable() -> bool:
    try:
        conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="module")
def postgres_up() -> bool:
    return asyncio.run(_postgres_reachable())


@pytest.fixture(scope="module")
def quick_runs(
    request: pytest.FixtureRequest, postgres_up: bool
) -> Iterator[dict[str, Future[QuickRun]]]:
    """Start every selected script whose services are here, a few at a time."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    broker_here = mosquitto_available()
    runnable = [
        s
        for s in SCRIPTS
        if s.name in selected
        and (postgres_up or "postgres" not in _uses(s))
        and (broker_here or "mosquitto" not in _uses(s))
    ]
    # The scripts with more services to start take longest: start them first.
    runnable.sort(key=lambda s: -len(_uses(s)))
    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        yield {s.name: pool.submit(_run, s) for s in runnable}


def mosquitto_available() -> bool:
    try:
        mosquitto_binary()
    except pytest.skip.Exception:
        return False
    return True


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_benchmark_runs_quick_and_prints_its_figures(
    script: str, quick_runs: dict[str, Future[QuickRun]], postgres_up: bool
) -> None:
    uses = _uses(BENCHMARKS / script)
    if "postgres" in uses and not postgres_up:
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it (see .ci/run)")
        pytest.skip(message)
    if "mosquitto" in uses:
        mosquitto_binary()  # skips here without the broker, fails in CI
    run = quick_runs[script].result(timeout=TIMEOUT * len(SCRIPTS))
    output = f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0, output
    figures = [line for line in run.stdout.splitlines() if FIGURE.search(line)]
    assert len(figures) >= 2, f"no table of figures\n{output}"
    # The services are here, so no backend may have been skipped.
    assert "skipped:" not in run.stdout, output
