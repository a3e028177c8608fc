"""Faults under steady load over HTTP, MQTT and MLLP at once: after each, every acknowledged
reading is stored exactly once, every other one is stored once or was refused with a reason,
the services recover on their own, and the alert raised during the fault reaches the
clinician's alert list. Each run adds a row to the fault table printed at the end
(docs/faults.md)."""

from __future__ import annotations

import pytest

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
from tests.faults.ledger import FaultRow, Ledger


def assert_nothing_lost(row: FaultRow, ledger: Ledger) -> None:
    assert row.lost == 0, f"acknowledged but not stored: {row}, e.g. {ledger.lost[:5]}"
    assert row.duplicated == 0, f"stored twice: {row}"
    assert row.unexplained == 0, f"neither stored nor refused with a reason: {row}"
    # The services came back by themselves: what was resent after the fault got through.
    assert row.acknowledged == row.sent, dict(list(ledger.refusals.items())[:5])
    assert row.stored == row.sent
    assert row.recovery_seconds is not None, "a channel never acknowledged again"
    assert row.alert_seen, "the alert raised during the fault is not on the alert list"
    assert row.alert_streamed, "the alert raised during the fault did not come on the stream"


async def _run(stack: Stack, fault: Fault, rows: list[FaultRow], **options: float) -> None:
    row, ledger = await run_fault(stack, fault, **options)  # type: ignore[arg-type]
    rows.append(row)
    assert_nothing_lost(row, ledger)


# Each kill is run on one backend here (a restart is the slow part); benchmarks/faults.py
# runs every fault on both.
@pytest.mark.parametrize("fault", [kill_server, restart_broker])
async def test_processes_and_broker_on_sqlite(
    sqlite_stack: Stack, fault_rows: list[FaultRow], fault: object
) -> None:
    await _run(sqlite_stack, fault(), fault_rows)  # type: ignore[operator]


async def test_a_full_disk_refuses_writes_and_loses_nothing(
    sqlite_stack: Stack, fault_rows: list[FaultRow]
) -> None:
    if sqlite_stack.small_disk is None:
        pytest.skip(str(sqlite_stack.no_small_disk))
    await _run(sqlite_stack, fill_disk(sqlite_stack.small_disk), fault_rows)


@pytest.mark.parametrize("fault", [restart_postgres, postgres_down, kill_worker])
async def test_database_faults_on_postgresql(
    postgres_stack: Stack, fault_rows: list[FaultRow], fault: object
) -> None:
    await _run(postgres_stack, fault(), fault_rows)  # type: ignore[operator]


async def test_connections_exhausted_by_another_client_recover(
    postgres_stack: Stack, fault_rows: list[FaultRow]
) -> None:
    await _run(postgres_stack, exhaust_connections(), fault_rows)
