"""A rule state gives the rules the very series the stored history gives, at every edge: out
of order, again, panels, merged codes, trimmed, stored as segments and read back whole or
caught up from what another process wrote since."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_code
from medmesh.rules.catalog import RULE_CODES
from medmesh.rules.series import series
from medmesh.rules.state import SLACK, Head, RuleState, StateWrite
from medmesh.store.observations import StoredObservation

START = datetime(2026, 11, 24, 8, tzinfo=UTC)
LOOKBACK = timedelta(minutes=76)
BP, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
SINGLE = ["2708-6", "8867-4", "41653-7", "99504-3", "9279-1", "8310-5", "29463-7"]  # + weight


def _observation(rng: random.Random, n: int, at: datetime) -> StoredObservation:
    code = rng.choice([*SINGLE, BP])
    values = (
        (MeasuredValue(SYSTOLIC, rng.uniform(90, 200), ""),)
        + (MeasuredValue(DIASTOLIC, rng.uniform(50, 130), ""),)
        if code == BP
        else (MeasuredValue(code, round(rng.uniform(30, 200), 1), ""),)
    )
    oid = f"{rng.randrange(16**8):08x}-{n}"
    return StoredObservation(oid, "p", rng.choice(["d1", "d2"]), "", code, at, values, at)


def _stream(seed: int) -> list[StoredObservation]:
    """Mostly in time order, sometimes late or at the same second as another reading."""
    rng = random.Random(seed)
    found = []
    at = START
    for n in range(600):
        at += timedelta(seconds=rng.choice([0, 1, 5, 30, 60]))
        late = timedelta(minutes=rng.choice([0] * 8 + [3, 40]))
        found.append(_observation(rng, n, at - late))
    return found


class Stored:
    """The segments table of one patient, as `RuleStates.put` changes it."""

    def __init__(self) -> None:
        self.version = 0
        self.head = b""
        self.rows: dict[tuple[int, datetime], bytes] = {}

    def put(self, write: StateWrite) -> int:
        self.version += 1
        if write.replace_all:
            self.rows.clear()
        if write.drop_before is not None:
            self.rows = {k: v for k, v in self.rows.items() if k[1] >= write.drop_before}
        wholes = {s.bucket for s in write.segments if s.whole}
        self.rows = {k: v for k, v in self.rows.items() if k[1] not in wholes}
        for segment in write.segments:
            self.rows[(self.version, segment.bucket)] = segment.data
        self.head = write.head
        return self.version

    def segments(self, after: int = 0) -> list[bytes]:
        return [self.rows[k] for k in sorted(self.rows) if k[0] > after]


def _head(stored: Stored) -> Head:
    head = Head.decode(stored.head)
    assert head is not None
    return head


@pytest.mark.parametrize("seed", range(8))
def test_every_window_of_the_state_is_the_series_of_the_stored_history(seed: int) -> None:
    stream = _stream(seed)
    rng = random.Random(seed)
    state = RuleState("p", START - LOOKBACK - SLACK)
    table = Stored()
    other: tuple[int, RuleState] | None = None  # another process's copy, caught up now and then
    stored: list[StoredObservation] = []
    codes = [[c] for c in [*SINGLE, SYSTOLIC, DIASTOLIC]] + [["41653-7", "99504-3"]]
    position = 0
    while position < len(stream):
        batch = stream[position : position + rng.choice([1, 2, 5, 20])]
        position += len(batch)
        stored += batch
        newest = max(o.effective for o in batch)
        if (
            table.version and rng.random() < 0.2
        ):  # another process stored it: this one reads it back
            state = RuleState.load("p", _head(table), table.segments())
        elif rng.random() < 0.3 and other is not None and other[1].generation == state.generation:
            other[1].catch_up(_head(table), table.segments(other[0]))  # only what is new
            state = other[1]
            other = None
        if not state.covers(newest - LOOKBACK):  # rebuilt from history, as the engine does
            state = RuleState("p", newest - LOOKBACK - SLACK)
            state.merge(stored)
        state.merge(batch + batch[:1])  # a batch judged again changes nothing
        window = state.window(newest - LOOKBACK, newest)
        history = [
            o for o in stored if o.code in RULE_CODES and newest - LOOKBACK <= o.effective <= newest
        ]
        for wanted in codes:
            assert window(wanted) == series(history, wanted)
        state.trim(LOOKBACK)
        table.put(state.changes())
        if rng.random() < 0.3:
            other = (table.version, RuleState.load("p", _head(table), table.segments()))
    assert len(state) > 0
    assert len(RuleState.load("p", _head(table), table.segments())) == len(state)


def test_a_batch_writes_its_own_readings_not_the_window() -> None:
    """A 1 Hz pulse and SpO2 monitor an hour in: a batch of 20 readings stores those (and at
    most a closed minute again), not the hour."""
    state = RuleState("p", START - LOOKBACK - SLACK)
    table = Stored()
    sizes = []
    for second in range(0, 90 * 60, 10):
        at = START + timedelta(seconds=second)
        state.merge(
            StoredObservation(
                f"{code}-{second + i}",
                "p",
                "d",
                "",
                code,
                at + timedelta(seconds=i),
                (MeasuredValue(code, 90.0, ""),),
                at,
            )
            for i in range(10)
            for code in ("8867-4", "2708-6")
        )
        state.trim(LOOKBACK)
        write = state.changes()
        table.put(write)
        sizes.append(write.size)
    whole = sum(len(s) for s in table.segments())
    assert len(state) > 9_000
    assert max(sizes[-100:]) < whole / 20
    assert len(table.rows) < 400  # at most a few segments a minute of the window


@pytest.mark.parametrize("seed", range(4))
def test_readings_merged_as_committed_give_the_state_their_stored_rows_give(seed: int) -> None:
    """`merge_readings` (the worker's path, straight from the validated readings) and `merge`
    of the same readings as stored and read back make the same series and the same segments."""
    stream = _stream(seed)
    readings = [_as_reading(o) for o in stream]
    from_readings = RuleState("p", START - SLACK, generation="g")
    from_rows = RuleState("p", START - SLACK, generation="g")
    for start in range(0, len(stream), 50):
        from_readings.merge_readings(readings[start : start + 50])
        from_rows.merge(stream[start : start + 50])
    newest = max(o.effective for o in stream)
    for codes in [[c] for c in [*SINGLE, SYSTOLIC, DIASTOLIC]] + [["41653-7", "99504-3"]]:
        assert from_readings.window(START, newest)(codes) == from_rows.window(START, newest)(codes)
    assert from_readings.changes() == from_rows.changes()


def _as_reading(stored: StoredObservation) -> Reading:
    """The validated reading a stored observation was: a single value under its quantity's
    code and canonical unit (as ingest makes it), a panel's components as they are."""
    measure = measure_by_code(stored.code)
    assert measure is not None
    if measure.quantity is None:
        values = stored.values
    else:
        values = (MeasuredValue(measure.quantity.code, stored.values[0].value, "unit"),)
    reading = Reading(stored.device_id, stored.id, "p", measure, stored.effective, values)
    object.__setattr__(reading, "observation_id", stored.id)  # the stream's own ids
    return reading
