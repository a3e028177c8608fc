"""What happens to readings after they are committed (alert rules, the readings event), run in
the background so that acknowledging a reading never waits for it.

Each committed batch that has listeners leaves a `pending_evaluations` row, written in the
batch's own transaction and removed once every listener has run. A process that dies in
between leaves the row; the recovery round of any running process (the restarted one
included) takes up rows older than `recover_after` and runs the listeners on them, so a crash
between the acknowledgement and the rules delays an alert but never loses it. A listener that
fails leaves the row too and is retried in the same way, up to `MAX_ATTEMPTS` times.

Batches that queue up while one is being judged are taken together as a *round* (at most
`MAX_ROUND` batches and about `max_round_readings` readings, so that one round, and the wait
of whatever queues behind it, stays short under load): a round listener (the rule engine) gets
them all at once and judges them one after the other, in commit order, in one transaction, and
their rows are removed in one more: two commits a round instead of two a batch, and the same
alerts (the engine judges each batch as it would alone).

Urgent first: a queued batch holding a reading that `urgent` says may raise an alert on its own
(a critical glucose value) is not left behind the batches queued before it. The next round is
then the readings of that batch's urgent patients, from every queued batch up to it, in commit
order; the other patients' readings stay queued in their place. The rules judge each patient
on its own state, so judging one patient's batches before another's changes no alert as long as
each patient's own batches keep their commit order, which this does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from medmesh.domain.reading import Reading
from medmesh.domain.vocabulary import stored_measure
from medmesh.store.database import Database
from medmesh.store.observations import Observations, StoredObservation
from medmesh.store.pending_evaluations import PendingEvaluation, PendingEvaluations

log = logging.getLogger(__name__)

CommittedListener = Callable[[Sequence[Reading]], Awaitable[None]]
# Called with the batches of a round, in commit order.
RoundListener = Callable[[Sequence[Sequence[Reading]]], Awaitable[None]]

MAX_ATTEMPTS = 5
MAX_ROUND = 64
# Readings a round takes at most (a round is at least one batch, however large).
MAX_ROUND_READINGS = 2000


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Queued:
    """A committed batch waiting for its listeners, or the part of it still waiting."""

    pending_id: str
    readings: Sequence[Reading]
    urgent: frozenset[str]  # patients with a reading that may raise an alert on its own


class AfterCommit:
    """Runs the listeners on each committed batch, one round at a time, each patient's batches
    in commit order.

    A worker (`start`/`stop`): `stop` lets the batches already handed over finish first. At
    most `max_queued` batches wait; past that, handing one over waits, which slows the
    adapters rather than holding an unbounded backlog in memory. `urgent` marks the readings
    whose patients are judged ahead of the queue (rules/urgency.py; None: none are).
    """

    def __init__(
        self,
        database: Database,
        *,
        recover_after: timedelta = timedelta(seconds=30),
        max_queued: int = 1000,
        max_round_readings: int = MAX_ROUND_READINGS,
        urgent: Callable[[Reading], bool] | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._recover_after = recover_after
        self._clock = clock
        self._listeners: list[RoundListener] = []
        self._max_queued = max_queued
        self._max_round_readings = max_round_readings
        self._urgent = urgent
        self._queue: deque[_Queued] = deque()
        self._changed = asyncio.Condition()
        # Pending id → its parts queued or being judged; an id leaves once all are judged.
        self._parts: dict[str, int] = {}
        self._failed: set[str] = set()  # a part failed: the row is marked failed at the end
        self._in_hand: set[str] = set()  # handed over and not finished: not for recovery
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, listener: CommittedListener) -> None:
        """`listener` is called once a batch."""

        async def each(batches: Sequence[Sequence[Reading]]) -> None:
            for readings in batches:
                if readings:
                    await listener(readings)

        self._listeners.append(each)

    def add_round(self, listener: RoundListener) -> None:
        """`listener` is called once a round, with its batches in commit order."""
        self._listeners.append(listener)

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[Callable[[str], None]]:
        """Around a transaction that writes pending rows: `hold(pending_id)` counts the row
        as this process's (`held`) from before its commit, so that a round judging its
        patients meanwhile does not take its readings for another process's and read them
        ahead; if the transaction fails, the rows it held are released."""
        held: list[str] = []

        def hold(pending_id: str) -> None:
            self._in_hand.add(pending_id)
            held.append(pending_id)

        try:
            yield hold
        except BaseException:
            self._in_hand.difference_update(held)
            raise

    def held(self) -> frozenset[str]:
        """The pending batches handed to this process and not finished (its own queue)."""
        return frozenset(self._in_hand)

    @property
    def wanted(self) -> bool:
        """Whether committed batches need after-commit work at all."""
        return bool(self._listeners)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="medmesh-after-commit"),
            asyncio.create_task(self._recover_periodically(), name="medmesh-after-commit-recovery"),
        ]

    async def stop(self) -> None:
        if self._tasks:
            await self.settled()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def submit(self, pending_id: str, readings: Sequence[Reading]) -> None:
        """Hand over a committed batch (its `pending_evaluations` row is `pending_id`)."""
        urgent = frozenset(
            () if self._urgent is None else (r.patient_id for r in readings if self._urgent(r))
        )
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._queue) < self._max_queued)
                self._in_hand.add(pending_id)
                self._parts[pending_id] = self._parts.get(pending_id, 0) + 1
                self._queue.append(_Queued(pending_id, readings, urgent))
                self._changed.notify_all()
        except BaseException:
            # Not queued (cancelled while the queue was full): held since its transaction
            # (`holding`), it is let go, so that recovery takes it up.
            if pending_id not in self._parts:
                self._in_hand.discard(pending_id)
            raise

    async def settled(self) -> None:
        """Wait until every batch handed over so far has been through the listeners."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._parts)

    async def recover(self) -> int:
        """Run the listeners on batches left pending for longer than `recover_after` (their
        process died, or a listener failed); returns how many were taken up."""
        async with self._database.read() as conn:
            stale = await PendingEvaluations(conn).not_newer_than(
                self._clock() - self._recover_after
            )
        stale = [p for p in stale if p.id not in self._in_hand]  # still queued here
        for pending in stale:
            if pending.attempts >= MAX_ATTEMPTS:
                log.error(
                    "after-commit work for %d reading(s) failed %d times; given up",
                    len(pending.observation_ids),
                    pending.attempts,
                )
                await self._finish(pending.id, ok=True)
                continue
            await self._process(pending.id, await self._readings(pending))
        return len(stale)

    def _next_round(self) -> list[_Queued]:
        """Take the next round off the queue: the urgent patients' readings of the first
        batch that has any (with theirs from the batches before it), else the oldest batches
        up to `MAX_ROUND` and `max_round_readings`."""
        queue = self._queue
        first = next((i for i, queued in enumerate(queue) if queued.urgent), None)
        if first is not None:
            patients = queue[first].urgent
            round_: list[_Queued] = []
            kept: list[_Queued] = []
            for index in range(first + 1):
                queued = queue[index]
                mine = [r for r in queued.readings if r.patient_id in patients]
                rest = [r for r in queued.readings if r.patient_id not in patients]
                if mine:
                    round_.append(_Queued(queued.pending_id, mine, frozenset()))
                if rest:
                    if mine:  # one batch, now in two parts
                        self._parts[queued.pending_id] += 1
                    kept.append(_Queued(queued.pending_id, rest, queued.urgent - patients))
            for _ in range(first + 1):
                queue.popleft()
            queue.extendleft(reversed(kept))
            return round_
        round_ = [queue.popleft()]
        readings = len(round_[0].readings)
        while (
            queue
            and len(round_) < MAX_ROUND
            and readings + len(queue[0].readings) <= self._max_round_readings
        ):
            round_.append(queue.popleft())
            readings += len(round_[-1].readings)
        return round_

    async def _run(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._queue))
                round_ = self._next_round()
                self._changed.notify_all()  # room for a waiting `submit`
            finished: list[str] = []
            try:
                ok = await self._judge([queued.readings for queued in round_])
                for queued in round_:
                    self._parts[queued.pending_id] -= 1
                    if not ok:
                        self._failed.add(queued.pending_id)
                    if self._parts[queued.pending_id] == 0:
                        finished.append(queued.pending_id)
                await self._settle_rows(
                    [p for p in finished if p not in self._failed],
                    [p for p in finished if p in self._failed],
                )
            except Exception as exc:  # the rows stay; recovery takes them up
                log.error("after-commit bookkeeping failed (%s)", type(exc).__name__)
            finally:
                async with self._changed:
                    for pending_id in finished:
                        del self._parts[pending_id]
                        self._failed.discard(pending_id)
                        self._in_hand.discard(pending_id)
                    self._changed.notify_all()

    async def _recover_periodically(self) -> None:
        interval = max(self._recover_after.total_seconds() / 2, 0.05)
        while True:
            try:
                await self.recover()
            except Exception as exc:  # the database may be back at the next round
                log.error("after-commit recovery failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _process(self, pending_id: str, readings: Sequence[Reading]) -> None:
        ok = await self._judge([readings])
        await self._settle_rows([pending_id] if ok else [], [] if ok else [pending_id])

    async def _judge(self, round_: Sequence[Sequence[Reading]]) -> bool:
        """Run every listener on the round's batches; False if one failed."""
        ok = True
        batches = [readings for readings in round_ if readings]
        for listener in self._listeners:
            try:
                if batches:
                    await listener(batches)
            except Exception as exc:  # the batches are stored; a listener must not undo that
                log.error("after-commit listener failed (%s)", type(exc).__name__)
                ok = False
        return ok

    async def _settle_rows(self, done: Sequence[str], failed: Sequence[str]) -> None:
        if not done and not failed:
            return
        async with self._database.write() as conn:
            pending = PendingEvaluations(conn)
            if done:
                await pending.remove_many(done)
            for pending_id in failed:
                await pending.failed(pending_id)

    async def _finish(self, pending_id: str, *, ok: bool) -> None:
        async with self._database.write() as conn:
            pending = PendingEvaluations(conn)
            await (pending.remove(pending_id) if ok else pending.failed(pending_id))

    async def _readings(self, pending: PendingEvaluation) -> list[Reading]:
        """The batch's readings as stored (an erased patient's are gone: skipped)."""
        async with self._database.read() as conn:
            stored = await Observations(conn).get_many(pending.observation_ids)
        return [r for r in map(_reading, stored) if r is not None]


def _reading(stored: StoredObservation) -> Reading | None:
    unit = stored.values[0].unit if len(stored.values) == 1 else None
    measure = stored_measure(stored.code, unit)
    return Reading(
        stored.device_id,
        stored.message_id,
        stored.patient_id,
        measure,
        stored.effective,
        stored.values,
    )
