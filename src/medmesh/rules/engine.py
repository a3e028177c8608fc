"""The rules on every committed batch: per patient, merge the batch into the patient's rule
state (rules/state.py), judge the woken rules on it and store the alert changes; store the
round's states together at its end, then publish the changes. The state replaces re-reading
the rules' window from observations, so a batch costs what the batch costs however long the
history."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Alert
from medmesh.domain.care_plans import CarePlan
from medmesh.domain.reading import Reading
from medmesh.events.bus import EventBus
from medmesh.rules import catalog
from medmesh.rules.alerting import apply_outcomes
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.notify import publish_alerts
from medmesh.rules.outcomes import Cleared, Outcome, dedupe_key
from medmesh.rules.schedule import STALE_RULE
from medmesh.rules.state import SLACK, Head, RuleState
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from medmesh.store.observations import (
    ObservationQuery,
    Observations,
    StoredObservation,
    TimeBound,
)
from medmesh.store.pending_evaluations import PendingEvaluations
from medmesh.store.rule_states import RuleStates, StatePut

log = logging.getLogger(__name__)

MAX_HISTORY_ROWS = 20_000
# Rebuilding a state reads at most this many readings (a day of 1 Hz from four codes).
MAX_REBUILD_ROWS = 400_000
# Decoded states kept by this process, most recently used last.
CACHED_STATES = 2_000


def _now() -> datetime:
    return datetime.now(UTC)


class RuleEngine:
    """Register `on_committed` with the ingest pipeline. `clock` stamps alert changes (when
    medmesh raised or resolved them); rules judge readings by their own times."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        clock: Callable[[], datetime] = _now,
        *,
        incremental: bool = True,
        held: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._database = database
        self._bus = bus
        self._clock = clock
        # The pending batches this process has in hand (AfterCommit.held): judged here, in
        # commit order, so not read ahead as other processes' readings are.
        self._held = held
        # False: read the window from observations on every batch, as before rule states (kept
        # to check that both give the same alerts).
        self._incremental = incremental
        # patient id → (stored version, decoded state); valid while the stored version is it.
        self._states: OrderedDict[str, tuple[int, RuleState]] = OrderedDict()

    async def on_committed(self, readings: Sequence[Reading]) -> None:
        """Judge each patient of a committed batch, all in one transaction (one commit, not
        one a patient), then publish the changes."""
        await self.on_committed_round([readings])

    async def on_committed_round(self, batches: Sequence[Sequence[Reading]]) -> None:
        """Judge several committed batches in one transaction: each batch, in the order
        given, exactly as `on_committed` would judge it alone (per patient at the batch's
        newest reading), so the alerts are the same; then publish the changes in order.

        Every patient of the round is locked first, in id order, so that two processes
        judging rounds never wait on each other in a cycle.
        """
        changed: list[Alert] = []
        # patient id → (version read, state): judged this round, stored at its end.
        judged: dict[str, tuple[int | None, RuleState]] = {}
        patients = sorted({r.patient_id for readings in batches for r in readings})
        last = {r.patient_id: index for index, readings in enumerate(batches) for r in readings}
        async with self._database.write() as conn:
            await Alerts(conn).lock_patients(patients)
            committed = await self._committed(conn, batches) if self._incremental else {}
            # Read for the whole round in one query each. The heads are what a read at each
            # patient's turn would find (only a round holding the patient's lock writes one);
            # a care plan saved while the round runs counts from the next round, as one saved
            # just after it would.
            plans = await CarePlans(conn).for_patients(patients)
            # `committed` has a key for every patient of the round with a reading the rules
            # read: those whose state is judged.
            heads = await RuleStates(conn).heads(sorted(committed)) if self._incremental else {}
            # Kept up to date by each batch's changes for the next (`apply_outcomes`).
            active = await Alerts(conn).active_for_patients(patients)
            for index, readings in enumerate(batches):
                by_patient: dict[str, list[Reading]] = {}
                for reading in readings:
                    by_patient.setdefault(reading.patient_id, []).append(reading)
                for patient_id in sorted(by_patient):
                    changed += await self._evaluate(
                        conn,
                        plans.get(patient_id) or CarePlan(patient_id),
                        by_patient[patient_id],
                        judged,
                        committed.pop(patient_id, ()),
                        heads,
                        active[patient_id],
                        last_of_round=last[patient_id] == index,
                    )
            written = await self._store(conn, judged)
        self._remember(written)  # committed: now the stored versions are these
        await publish_alerts(self._bus, changed)
        # Counts only: titles and details are health data.
        log.debug("rules changed %d alert(s) for %d patient(s)", len(changed), len(patients))

    async def _committed(
        self, conn: AsyncConnection, batches: Sequence[Sequence[Reading]]
    ) -> dict[str, list[StoredObservation]]:
        """Per patient of the round, the readings of batches other processes committed and
        have not judged yet (their `pending_evaluations`). A patient's state is merged with
        them before their first batch of the round is judged, so a batch is judged with what
        other processes committed, as judging from the stored history did; without them,
        two processes judging one patient's batches out of order could each miss the other's
        readings (a run seen short: an alert neither raised nor resolved). This process's own
        batches (this round's, and those queued behind it) are judged in commit order, each
        as it would be alone, so they are not read ahead."""
        found: dict[str, list[StoredObservation]] = {}
        own: set[str] = set()
        for readings in batches:
            for reading in readings:
                own.add(reading.observation_id)
                if reading.measure.code in catalog.RULE_CODES:
                    found.setdefault(reading.patient_id, [])
        pending = await PendingEvaluations(conn).of_patients(sorted(found), self._held())
        others = sorted({oid for _, _, ids in pending for oid in ids} - own)
        for obs in await Observations(conn).get_many(others):
            if obs.patient_id in found:  # (a merge may have moved it to another record)
                found[obs.patient_id].append(obs)
        return found

    async def _evaluate(
        self,
        conn: AsyncConnection,
        plan: CarePlan,
        readings: Sequence[Reading],
        judged: dict[str, tuple[int | None, RuleState]],
        committed: Iterable[StoredObservation],
        heads: dict[str, tuple[int, bytes] | None],
        active: dict[str, Alert],
        *,
        last_of_round: bool,
    ) -> list[Alert]:
        """Judge one patient's state at the newest of `readings` and store the alert changes
        (the patient is locked); the state goes in `judged`, stored with the round's others
        at its end. The state is trimmed after the patient's last batch of the
        round only, so that the round's later readings merged ahead do not move the horizon
        past an earlier batch's window."""
        patient_id = plan.patient_id
        batch_codes = {r.measure.code for r in readings}
        newest = max(r.effective for r in readings)
        alerts = Alerts(conn)
        thresholds = thresholds_for(plan)
        outcomes: list[Outcome] = [
            # A device that sends readings is reporting again.
            Cleared(dedupe_key(STALE_RULE, patient_id, device_id))
            for device_id in sorted({r.device_id for r in readings})
        ]
        codes = catalog.codes_to_read(batch_codes, thresholds)
        if self._incremental:
            if batch_codes & catalog.RULE_CODES:
                lookback = catalog.lookback(thresholds)
                state, version = await self._state(
                    conn, patient_id, newest - lookback, judged, heads
                )
                state.merge(committed)
                state.merge_readings(readings)
                if codes:
                    window = state.window(newest - lookback, newest)
                    outcomes += catalog.evaluate(patient_id, window, batch_codes, thresholds)
                if last_of_round:
                    state.trim(lookback)
                # Stored once for the round (`_store`), with what its later batches add.
                judged[patient_id] = (version, state)
        elif codes:
            history = await Observations(conn).search(
                ObservationQuery(
                    patient_id=patient_id,
                    codes=codes,
                    bounds=(
                        TimeBound("ge", newest - catalog.lookback(thresholds)),
                        TimeBound("le", newest),
                    ),
                    limit=MAX_HISTORY_ROWS,
                )
            )
            outcomes += catalog.evaluate(
                patient_id, catalog.from_history(history), batch_codes, thresholds
            )
        return await apply_outcomes(alerts, patient_id, outcomes, self._clock(), active)

    async def _store(
        self, conn: AsyncConnection, judged: dict[str, tuple[int | None, RuleState]]
    ) -> dict[str, tuple[int, RuleState]]:
        """Store the states the round judged, each over the version it was read at, all
        together; returns each with its new version."""
        puts = []
        for patient_id, (version, state) in sorted(judged.items()):
            write = state.changes()
            puts.append(
                StatePut(
                    patient_id,
                    write.head,
                    write.segments,
                    version,
                    drop_before=write.drop_before,
                    replace_all=write.replace_all,
                )
            )
        versions = await RuleStates(conn).put_many(puts, self._clock())
        return {patient_id: (versions[patient_id], judged[patient_id][1]) for patient_id in judged}

    async def _state(
        self,
        conn: AsyncConnection,
        patient_id: str,
        since: datetime,
        judged: dict[str, tuple[int | None, RuleState]],
        heads: dict[str, tuple[int, bytes] | None],
    ) -> tuple[RuleState, int | None]:
        """The patient's state covering `since` on, and the version stored (None: none is).

        The stored head is read first: when this process holds that version decoded, nothing
        else is read; when it holds an older version of the same generation, only the segments
        written since are read. A state that does not reach back to `since` (the first batch,
        a care plan that lengthened a window, a batch older than the state) is rebuilt from
        the stored history once (and then stored whole, as a new generation).
        """
        states = RuleStates(conn)
        state: RuleState | None = None
        version: int | None = None
        if patient_id in judged:  # judged earlier in this round: this transaction's own
            version, state = judged[patient_id]
        else:
            # Read with the round's other heads, unless the patient was not among them.
            stored = heads[patient_id] if patient_id in heads else await states.head(patient_id)
            # Taken out: put back only once the transaction that updates it has committed.
            cached = self._states.pop(patient_id, None)
            head = None if stored is None else Head.decode(stored[1])
            if stored is not None:
                version = stored[0]
            if head is not None and version is not None:
                if cached is not None and cached[1].generation == head.generation:
                    if cached[0] < version:
                        cached[1].catch_up(head, await states.segments(patient_id, cached[0]))
                    if cached[0] <= version:
                        state = cached[1]
                if state is None:
                    state = RuleState.load(patient_id, head, await states.segments(patient_id))
        if state is None or not state.covers(since):
            state = RuleState(patient_id, since - SLACK)
            state.merge(
                await Observations(conn).search(
                    ObservationQuery(
                        patient_id=patient_id,
                        codes=tuple(sorted(catalog.RULE_CODES)),
                        bounds=(TimeBound("ge", state.horizon),),
                        limit=MAX_REBUILD_ROWS,
                    )
                )
            )
        return state, version

    def _remember(self, written: dict[str, tuple[int, RuleState]]) -> None:
        for patient_id, entry in written.items():
            self._states[patient_id] = entry
            self._states.move_to_end(patient_id)
        while len(self._states) > CACHED_STATES:
            self._states.popitem(last=False)
