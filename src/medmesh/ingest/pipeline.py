"""The one path every reading takes: validate, resolve the patient, drop duplicates, store the
batch in one transaction with the refused readings as dead letters, then (and only then) let the
adapter acknowledge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import Reading, observation_id
from medmesh.domain.registry import DeviceAssignment
from medmesh.domain.validation import check_effective_time, resolve_measure, validate_values
from medmesh.ingest.incoming import Incoming
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter, DeadLetters
from medmesh.store.observations import Observations
from medmesh.store.registry import Assignments


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    message_id: str | None
    reason: RejectReason
    detail: str


@dataclass(slots=True)
class IngestResult:
    """What became of a batch; returned to the device once it is durable."""

    stored: list[str] = field(default_factory=list)  # observation ids
    duplicates: list[str] = field(default_factory=list)  # message ids
    rejected: list[Rejection] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _patient_at(history: Sequence[DeviceAssignment], moment: datetime) -> str:
    for assignment in history:
        if assignment.covers(moment):
            return assignment.patient_id
    raise InvalidReading(
        RejectReason.NO_PATIENT, "the device was not assigned to a patient at the reading's time"
    )


class IngestPipeline:
    def __init__(
        self,
        database: Database,
        *,
        max_clock_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._max_clock_skew = max_clock_skew
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def ingest(self, device_id: str, channel: str, batch: Sequence[Incoming]) -> IngestResult:
        """Store a device's batch. Returns after the commit; raises if the commit failed."""
        received_at = self.now()
        result = IngestResult()
        refused: list[DeadLetter] = []

        def refuse(index: int, item: Incoming, error: InvalidReading) -> None:
            result.rejected.append(Rejection(index, item.message_id, error.reason, error.message))
            refused.append(
                DeadLetter(
                    received_at,
                    channel,
                    device_id,
                    item.message_id,
                    error.reason.value,
                    error.message,
                    item.payload,
                )
            )

        async with self._database.write() as conn:
            history = await Assignments(conn).for_device(device_id)
            valid: dict[str, Reading] = {}
            for index, item in enumerate(batch):
                try:
                    if item.error is not None:
                        raise item.error
                    assert item.reading is not None
                    raw = item.reading
                    measure = resolve_measure(raw.measure)
                    values = validate_values(measure, raw)
                    check_effective_time(raw.effective, received_at, self._max_clock_skew)
                    patient_id = _patient_at(history, raw.effective)
                except InvalidReading as error:
                    refuse(index, item, error)
                    continue
                oid = observation_id(device_id, raw.message_id)
                if oid in valid:
                    result.duplicates.append(raw.message_id)
                    continue
                valid[oid] = Reading(
                    device_id, raw.message_id, patient_id, measure, raw.effective, values
                )
            observations = Observations(conn)
            already = await observations.existing_ids(list(valid))
            fresh = [r for oid, r in valid.items() if oid not in already]
            result.duplicates.extend(valid[oid].message_id for oid in already)
            await observations.add_batch(fresh, received_at)
            await DeadLetters(conn).add_many(refused)
            result.stored = [r.observation_id for r in fresh]
        return result
