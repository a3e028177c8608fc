"""The one path every reading takes: validate, resolve the patient, drop duplicates, store the
batch in one transaction with the refused readings as dead letters, then (and only then) let the
adapter acknowledge. The alert rules and the readings event run after, in the background
(`ingest/after_commit.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import Reading
from medmesh.domain.registry import DeviceAssignment
from medmesh.domain.validation import check_effective_time, reading_measure, validate_values
from medmesh.ingest.after_commit import AfterCommit, CommittedListener, RoundListener
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.signed_readings import SignaturePolicy, SigningKeySeen
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter, DeadLetters
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observations import Observations
from medmesh.store.pending_evaluations import PendingEvaluations
from medmesh.store.registry import Assignments

__all__ = [
    "CommittedListener",
    "DeviceBatch",
    "IngestPipeline",
    "IngestResult",
    "Rejection",
    "RoundListener",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    message_id: str | None
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """Readings one device sent in one message or request.

    `patient_id` is set when the sender names the patient and is trusted to (an HL7 shared
    bedside monitor, whose patients come from PID by design); otherwise the patient is the one
    the device was assigned to at each reading's time. `claimed_patient_id` is a patient the
    sender names (HL7 PID of any other device): it must be that assigned patient.
    """

    device_id: str
    channel: str
    items: Sequence[Incoming]
    patient_id: str | None = None
    claimed_patient_id: str | None = None
    # The hash of the credential the device sent, when it was authenticated from a cache:
    # checked again in the storing transaction, and nothing of the batch is stored if it is
    # no longer the device's (access/identity/device_credentials.py).
    credential: str | None = None
    # The signing key the batch's signature was checked against, when it was remembered by
    # the process: the batch is stored only if it is still the device's
    # (ingest/known_signing_keys.py).
    signing_key: SigningKeySeen | None = None


@dataclass(slots=True)
class IngestResult:
    """What became of a batch; returned to the device once it is durable."""

    stored: list[str] = field(default_factory=list)  # observation ids
    duplicates: list[str] = field(default_factory=list)  # message ids
    rejected: list[Rejection] = field(default_factory=list)
    # The batch's credential was rotated or removed: nothing of it was stored.
    unauthenticated: bool = False
    # The device's signing key is no longer the one its signature was checked against:
    # nothing of it was stored, and the sender checks it again.
    signing_key_changed: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


AlsoWrite = Callable[[AsyncConnection], Awaitable[None]]


@dataclass(slots=True)
class _Waiting:
    """One caller's part of a group commit, answered once the group's transaction ends."""

    batches: Sequence[DeviceBatch]
    refused: Sequence[DeadLetter]
    also: AlsoWrite | None
    answer: asyncio.Future[list[IngestResult]]


@dataclass(slots=True)
class _Group:
    waiting: list[_Waiting] = field(default_factory=list)
    readings: int = 0


def _last_change(history: Sequence[DeviceAssignment], now: datetime) -> datetime | None:
    """When the device was last assigned or unassigned, up to `now`."""
    moments = [m for a in history for m in (a.start, a.end) if m is not None and m <= now]
    return max(moments, default=None)


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
        reassignment_backfill: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = _now,
        after_commit: AfterCommit | None = None,
        group_commit: timedelta = timedelta(0),
        group_commit_max_readings: int = 5000,
        signatures: SignaturePolicy | None = None,
    ) -> None:
        self._database = database
        # Which devices must sign, and the time window (ingest/signed_readings.py).
        self.signatures = signatures or SignaturePolicy()
        # Group commit: calls arriving within `group_commit` of the first share one transaction
        # (zero: each call commits alone). A group is also closed at the readings cap.
        self._group_wait = group_commit.total_seconds()
        self._group_max = group_commit_max_readings
        self._group: _Group | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._max_clock_skew = max_clock_skew
        self._reassignment_backfill = reassignment_backfill
        self._earliest: tuple[Sequence[DeviceAssignment], datetime, datetime | None] | None = None
        self._clock = clock
        # A worker: whoever runs the pipeline starts it (services.py) when it has listeners.
        self.after_commit = after_commit or AfterCommit(database, clock=clock)

    def on_committed(self, listener: CommittedListener) -> None:
        """Call `listener` with the readings of every batch after it is committed and
        acknowledged (rules, events), in the background. A failing listener is logged and
        retried; it never undoes or delays the acknowledgement."""
        self.after_commit.add(listener)

    def on_committed_round(self, listener: RoundListener) -> None:
        """As `on_committed`, but called once for the batches queued together (in commit
        order), so that a listener can handle them in one transaction."""
        self.after_commit.add_round(listener)

    def now(self) -> datetime:
        return self._clock()

    async def ingest(
        self,
        device_id: str,
        channel: str,
        batch: Sequence[Incoming],
        *,
        credential: str | None = None,
        signing_key: SigningKeySeen | None = None,
    ) -> IngestResult:
        """Store one device's batch. Returns after the commit; raises if the commit failed."""
        (result,) = await self.ingest_many(
            [DeviceBatch(device_id, channel, batch, credential=credential, signing_key=signing_key)]
        )
        return result

    async def ingest_many(
        self,
        batches: Sequence[DeviceBatch],
        refused: Sequence[DeadLetter] = (),
        also: AlsoWrite | None = None,
    ) -> list[IngestResult]:
        """Store several batches (and messages refused whole, as `refused`) in one transaction.

        Adapters that receive many small messages (MQTT) commit them together and acknowledge
        each only after this returns; `also` writes whatever else those messages carried
        (device status) in the same transaction. With group commit on, concurrent calls (HTTP
        requests, MQTT rounds, MLLP messages) share the transaction; each returns only once
        it has committed, and if it fails, every call of the group raises.
        """
        if self._group_wait <= 0:
            return await self._commit(batches, refused, also)
        waiting = _Waiting(batches, refused, also, asyncio.get_running_loop().create_future())
        group = self._group
        if group is None:
            group = self._group = _Group()
            self._flush_later(group, self._group_wait)
        group.waiting.append(waiting)
        group.readings += sum(len(b.items) for b in batches) + len(refused)
        if group.readings >= self._group_max:
            self._flush_later(group, 0)
        return await waiting.answer

    def _flush_later(self, group: _Group, delay: float) -> None:
        task = asyncio.create_task(self._flush(group, delay), name="medmesh-group-commit")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, group: _Group, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._group is not group:
            return  # closed already (the readings cap)
        self._group = None
        alsos = [w.also for w in group.waiting if w.also is not None]

        async def also(conn: AsyncConnection) -> None:
            for write in alsos:
                await write(conn)

        try:
            results = await self._commit(
                [b for w in group.waiting for b in w.batches],
                [r for w in group.waiting for r in w.refused],
                also if alsos else None,
            )
        except BaseException as exc:  # every sender of the group learns it is not stored
            for w in group.waiting:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for w in group.waiting:
            if not w.answer.done():
                w.answer.set_result(results[start : start + len(w.batches)])
            start += len(w.batches)

    async def _commit(
        self,
        batches: Sequence[DeviceBatch],
        refused: Sequence[DeadLetter],
        also: AlsoWrite | None,
    ) -> list[IngestResult]:
        received_at = self.now()
        results = [IngestResult() for _ in batches]
        letters = list(refused)
        # A pending row held (`hold`) is released again if the transaction fails.
        async with self.after_commit.holding() as hold, self._database.write() as conn:
            observations = Observations(conn)
            assignments = Assignments(conn)
            valid: dict[str, tuple[IngestResult, Reading]] = {}
            # One query for every device of the group (group commit gathers many).
            found = await assignments.for_devices_with_credentials(
                {
                    b.device_id
                    for b in batches
                    if b.patient_id is None or b.credential is not None or b.signing_key is not None
                }
            )
            histories: dict[str, Sequence[DeviceAssignment]] = dict(found.histories)
            for batch, result in zip(batches, results, strict=True):
                if batch.credential is not None and found.credentials.get(batch.device_id) != (
                    batch.credential
                ):
                    result.unauthenticated = True
                    continue
                if batch.signing_key is not None and (
                    found.signing_keys.get(batch.device_id) != batch.signing_key.key
                ):
                    result.signing_key_changed = True
                    continue
                for index, item in enumerate(batch.items):
                    try:
                        reading = self._validate(batch, item, histories, received_at)
                    except InvalidReading as error:
                        result.rejected.append(
                            Rejection(index, item.message_id, error.reason, error.message)
                        )
                        letters.append(_dead_letter(batch, item, error, received_at))
                        continue
                    if reading.observation_id in valid:
                        result.duplicates.append(reading.message_id)
                        continue
                    valid[reading.observation_id] = (result, reading)
            inserted = await observations.add_batch([r for _, r in valid.values()], received_at)
            for oid, (result, reading) in valid.items():
                if oid in inserted:
                    result.stored.append(oid)
                else:
                    result.duplicates.append(reading.message_id)
            await DeadLetters(conn).add_many(letters)
            await DeviceStatuses(conn).seen(
                [
                    b.device_id
                    for b, r in zip(batches, results, strict=True)
                    if not r.unauthenticated
                ],
                received_at,
            )
            if also is not None:
                await also(conn)
            fresh = [reading for oid, (_, reading) in valid.items() if oid in inserted]
            pending_id = None
            if fresh and self.after_commit.wanted:
                # Committed with the readings: the rules run even if this process dies now.
                by_patient: dict[str, list[str]] = {}
                for reading in fresh:
                    by_patient.setdefault(reading.patient_id, []).append(reading.observation_id)
                pending_id = await PendingEvaluations(conn).add(by_patient, received_at)
                # Judged here, in commit order: a round of the rules must not read it ahead
                # as another process's, even before it is handed over after the commit.
                hold(pending_id)
        if pending_id is not None:
            await self.after_commit.submit(pending_id, fresh)
        return results

    async def check(self, batches: Sequence[DeviceBatch]) -> list[list[Rejection]]:
        """What `ingest_many` would refuse in `batches`, without storing anything: an
        all-or-nothing sender (a FHIR transaction) refuses the whole batch when any reading
        would be refused. Duplicates are not refusals. The assignments are read again at the
        commit, so a reassignment in between still decides there."""
        received_at = self.now()
        histories: dict[str, Sequence[DeviceAssignment]] = {}
        async with self._database.read() as conn:
            assignments = Assignments(conn)
            for batch in batches:
                if batch.patient_id is None and batch.device_id not in histories:
                    histories[batch.device_id] = await assignments.for_device(batch.device_id)
        found: list[list[Rejection]] = []
        for batch in batches:
            refused = []
            for index, item in enumerate(batch.items):
                try:
                    self._validate(batch, item, histories, received_at)
                except InvalidReading as error:
                    refused.append(Rejection(index, item.message_id, error.reason, error.message))
            found.append(refused)
        return found

    def _validate(
        self,
        batch: DeviceBatch,
        item: Incoming,
        histories: dict[str, Sequence[DeviceAssignment]],
        received_at: datetime,
    ) -> Reading:
        if item.error is not None:
            raise item.error
        assert item.reading is not None
        raw = item.reading
        measure = reading_measure(raw)
        values = validate_values(measure, raw)
        check_effective_time(raw.effective, received_at, self._max_clock_skew)
        patient_id = batch.patient_id or self._assigned_patient(
            histories[batch.device_id], raw.effective, received_at
        )
        if batch.claimed_patient_id is not None and batch.claimed_patient_id != patient_id:
            raise InvalidReading(
                RejectReason.NO_PATIENT,
                "the patient the message names is not the one the device was assigned to at "
                "the reading's time",
            )
        return Reading(batch.device_id, raw.message_id, patient_id, measure, raw.effective, values)

    def _assigned_patient(
        self, history: Sequence[DeviceAssignment], moment: datetime, received_at: datetime
    ) -> str:
        # Once a device changes hands, whoever holds it could write into the previous
        # patient's record by back-dating: only a grace period for readings still buffered
        # on the device is allowed before the change.
        patient_id = _patient_at(history, moment)
        # Asked once per reading, the same for a whole batch: remembered for the last
        # (history, time received) asked.
        memo = self._earliest
        if memo is not None and memo[0] is history and memo[1] == received_at:
            earliest = memo[2]
        else:
            change = _last_change(history, received_at)
            earliest = None if change is None else change - self._reassignment_backfill
            self._earliest = (history, received_at, earliest)
        if earliest is not None and moment < earliest:
            hours = self._reassignment_backfill.total_seconds() / 3600
            raise InvalidReading(
                RejectReason.BEFORE_REASSIGNMENT,
                f"time is more than {hours:g} h before the device's last assignment change "
                "(MEDMESH_REASSIGNMENT_BACKFILL_HOURS)",
            )
        return patient_id


def _dead_letter(
    batch: DeviceBatch, item: Incoming, error: InvalidReading, received_at: datetime
) -> DeadLetter:
    return DeadLetter(
        received_at,
        batch.channel,
        batch.device_id,
        item.message_id,
        error.reason.value,
        error.message,
        item.payload,
    )
