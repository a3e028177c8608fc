"""The deployments the fault tests break (tests/faults/stacks.py), one per backend and
module, and the table of every fault run, printed at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.faults.harness import Stack
from tests.faults.ledger import FaultRow, fault_table
from tests.faults.postgres_cluster import postgres_bin
from tests.faults.stacks import postgres_stack as postgres_deployment
from tests.faults.stacks import sqlite_stack as sqlite_deployment
from tests.mosquitto_broker import mosquitto_binary

ROWS: list[FaultRow] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(fault_table(ROWS))


@pytest.fixture(scope="session")
def fault_rows() -> list[FaultRow]:
    return ROWS


@pytest.fixture(scope="module")
def sqlite_stack(broker_certificates: Path) -> Iterator[Stack]:
    mosquitto_binary()  # skips without the broker, fails in CI
    with sqlite_deployment(broker_certificates) as stack:
        yield stack


@pytest.fixture(scope="module")
def postgres_stack(broker_certificates: Path) -> Iterator[Stack]:
    mosquitto_binary()
    bin_dir = postgres_bin()
    if bin_dir is None:
        message = "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI requires them (see .ci/run)")
        pytest.skip(message)
    with postgres_deployment(broker_certificates, bin_dir) as stack:
        yield stack
