"""What happens to readings after they are committed (alert rules, the readings event), run in
the background so that acknowledging a reading never waits for it.

Each committed batch that has listeners leaves a `pending_evaluations` row, written in the
batch's own transaction and removed once every listener has run. A process that dies in
between leaves the row; the recovery round of any running process (the restarted one
included) takes up rows older than `recover_after` and runs the listeners on them, so a crash
between the acknowledgement and the rules delays an alert but never loses it. A listener that
fails leaves the row too and is retried in the same way, up to `MAX_ATTEMPTS` times.

Batches that queue up while one is being judged are taken together as a *round* (at most
`MAX_ROUND`): a round listener (the rule engine) gets them all at once and judges them one
after the other, in commit order, in one transaction, and their rows are removed in one more:
two commits a round instead of two a batch, and the same alerts (the engine judges each batch
as it would alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
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


def _now() -> datetime:
    return datetime.now(UTC)


class AfterCommit:
    """Runs the listeners on each committed batch, one batch at a time in commit order.

    A worker (`start`/`stop`): `stop` lets the batches already handed over finish first. At
    most `max_queued` batches wait; past that, handing one over waits, which slows the
    adapters rather than holding an unbounded backlog in memory.
    """

    def __init__(
        self,
        database: Database,
        *,
        recover_after: timedelta = timedelta(seconds=30),
        max_queued: int = 1000,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._recover_after = recover_after
        self._clock = clock
        self._listeners: list[RoundListener] = []
        self._queue: asyncio.Queue[tuple[str, Sequence[Reading]]] = asyncio.Queue(max_queued)
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
        self._in_hand.add(pending_id)
        await self._queue.put((pending_id, readings))

    async def settled(self) -> None:
        """Wait until every batch handed over so far has been through the listeners."""
        await self._queue.join()

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

    async def _run(self) -> None:
        while True:
            round_ = [await self._queue.get()]
            while len(round_) < MAX_ROUND and not self._queue.empty():
                round_.append(self._queue.get_nowait())
            try:
                await self._process_round(round_)
            except Exception as exc:  # the rows stay; recovery takes them up
                log.error("after-commit bookkeeping failed (%s)", type(exc).__name__)
            finally:
                for pending_id, _ in round_:
                    self._in_hand.discard(pending_id)
                    self._queue.task_done()

    async def _recover_periodically(self) -> None:
        interval = max(self._recover_after.total_seconds() / 2, 0.05)
        while True:
            try:
                await self.recover()
            except Exception as exc:  # the database may be back at the next round
                log.error("after-commit recovery failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _process(self, pending_id: str, readings: Sequence[Reading]) -> None:
        await self._process_round([(pending_id, readings)])

    async def _process_round(self, round_: Sequence[tuple[str, Sequence[Reading]]]) -> None:
        ok = True
        batches = [readings for _, readings in round_ if readings]
        for listener in self._listeners:
            try:
                if batches:
                    await listener(batches)
            except Exception as exc:  # the batches are stored; a listener must not undo that
                log.error("after-commit listener failed (%s)", type(exc).__name__)
                ok = False
        pending_ids = [pending_id for pending_id, _ in round_]
        async with self._database.write() as conn:
            pending = PendingEvaluations(conn)
            if ok:
                await pending.remove_many(pending_ids)
            else:
                for pending_id in pending_ids:
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
