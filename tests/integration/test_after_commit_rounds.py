"""After-commit rounds: bounded by readings, and a reading that may alert on its own judged
ahead of the batches queued before it, each patient's batches still in commit order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from medmesh import provisioning
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import stored_measure
from medmesh.ingest.after_commit import AfterCommit
from medmesh.rules.urgency import may_alert_at_once
from medmesh.store.database import Database
from medmesh.store.pending_evaluations import PendingEvaluations
from tests.conftest import World

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _reading(patient: str, n: int, code: str = "8867-4", value: float = 70) -> Reading:
    return Reading(
        f"dev-{patient}",
        f"m-{patient}-{n}",
        patient,
        stored_measure(code, None),
        AT + timedelta(minutes=n),
        (MeasuredValue(code, value, ""),),
    )


def test_a_critical_glucose_may_alert_at_once_and_a_normal_heart_rate_may_not() -> None:
    assert may_alert_at_once(_reading("p", 1, "41653-7", 45))
    assert not may_alert_at_once(_reading("p", 1, "41653-7", 110))
    assert not may_alert_at_once(_reading("p", 1, "8867-4", 30))  # needs a sustained run


async def test_urgent_patients_are_judged_first_and_each_patient_keeps_commit_order(
    database: Database,
) -> None:
    rounds: list[list[list[str]]] = []

    async def record(batches: Sequence[Sequence[Reading]]) -> None:
        rounds.append([[r.message_id for r in batch] for batch in batches])

    after = AfterCommit(database, max_round_readings=3, urgent=may_alert_at_once)
    after.add_round(record)
    await after.submit("b1", [_reading("a", 1), _reading("c", 1)])
    await after.submit("b2", [_reading("a", 2), _reading("b", 2)])
    await after.submit("b3", [_reading("b", 3), _reading("c", 3, "41653-7", 45)])
    await after.start()
    await after.stop()
    # c's critical glucose first, with c's earlier reading before it; then the rest in commit
    # order, in rounds of at most 3 readings.
    assert rounds == [
        [["m-c-1"], ["m-c-3"]],
        [["m-a-1"], ["m-a-2", "m-b-2"]],
        [["m-b-3"]],
    ]


async def test_a_pending_batch_is_held_from_its_transaction_and_let_go_if_never_queued(
    database: Database, world: World
) -> None:
    """A committed batch is this process's from its transaction on, so a round does not read
    it ahead as another process's; but a batch that fails to commit, or whose hand-over is
    cancelled, must not stay held, or this process's recovery would never take it up."""
    after = AfterCommit(database, recover_after=timedelta(0), max_queued=1)

    with pytest.raises(RuntimeError):
        async with after.holding() as hold, database.write() as conn:
            hold(await PendingEvaluations(conn).add({world.patient_id: ["o-1"]}, AT))
            raise RuntimeError("the commit failed")
    assert after.held() == frozenset()

    async with after.holding() as hold, database.write() as conn:
        pending_id = await PendingEvaluations(conn).add({world.patient_id: ["o-2"]}, AT)
        hold(pending_id)
    assert after.held() == {pending_id}  # committed, not handed over yet

    await after.submit("queued-first", [_reading("a", 1)])  # the queue (of 1) is full
    handing_over = asyncio.create_task(after.submit(pending_id, [_reading("b", 2)]))
    await asyncio.sleep(0.05)
    handing_over.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handing_over
    assert pending_id not in after.held()
    assert await after.recover() == 1  # taken up, as a batch of a process that died is
    async with database.read() as conn:
        assert await PendingEvaluations(conn).not_newer_than(AT + timedelta(days=3650)) == []


async def test_a_round_reads_other_processes_pending_readings_and_not_its_own_queue(
    database: Database, world: World
) -> None:
    """`of_patients` leaves out the batches named (this process's queue), undecoded: what is
    left is what other processes committed and have not judged."""
    other = await provisioning.create_patient(
        database, family="Other", given="Patient", identifier="OTHER-1"
    )
    async with database.write() as conn:
        pending = PendingEvaluations(conn)
        mine = await pending.add({world.patient_id: ["o-mine-1", "o-mine-2"]}, AT)
        theirs = await pending.add({world.patient_id: ["o-theirs"]}, AT)
        await pending.add({other.id: ["o-other-patient"]}, AT)
    async with database.read() as conn:
        pending = PendingEvaluations(conn)
        everything = await pending.of_patients([world.patient_id])
        others = await pending.of_patients([world.patient_id], excluding={mine})
    assert sorted((p, ids) for p, _, ids in everything) == sorted(
        [(mine, ["o-mine-1", "o-mine-2"]), (theirs, ["o-theirs"])]
    )
    assert others == [(theirs, world.patient_id, ["o-theirs"])]
