"""After-commit rounds: bounded by readings, and a reading that may alert on its own judged
ahead of the batches queued before it, each patient's batches still in commit order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import stored_measure
from medmesh.ingest.after_commit import AfterCommit
from medmesh.rules.urgency import may_alert_at_once
from medmesh.store.database import Database

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
