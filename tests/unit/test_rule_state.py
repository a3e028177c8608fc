"""A rule state gives the rules the very series the stored history gives, at every edge: out
of order, again, panels, merged codes, trimmed, encoded and decoded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from medmesh.domain.reading import MeasuredValue
from medmesh.rules.catalog import RULE_CODES
from medmesh.rules.series import series
from medmesh.rules.state import SLACK, RuleState
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


@pytest.mark.parametrize("seed", range(8))
def test_every_window_of_the_state_is_the_series_of_the_stored_history(seed: int) -> None:
    stream = _stream(seed)
    rng = random.Random(seed)
    state = RuleState("p", START - LOOKBACK - SLACK)
    stored: list[StoredObservation] = []
    codes = [[c] for c in [*SINGLE, SYSTOLIC, DIASTOLIC]] + [["41653-7", "99504-3"]]
    position = 0
    while position < len(stream):
        batch = stream[position : position + rng.choice([1, 2, 5, 20])]
        position += len(batch)
        stored += batch
        newest = max(o.effective for o in batch)
        if not state.covers(newest - LOOKBACK):  # rebuilt from history, as the engine does
            state = RuleState("p", newest - LOOKBACK - SLACK)
            state.merge(stored)
        state.merge(batch + batch[:1])  # a batch judged again changes nothing
        if rng.random() < 0.2:  # another process stored it: this one reads it back
            decoded = RuleState.decode("p", state.encode())
            assert decoded is not None
            state = decoded
        window = state.window(newest - LOOKBACK, newest)
        history = [
            o for o in stored if o.code in RULE_CODES and newest - LOOKBACK <= o.effective <= newest
        ]
        for wanted in codes:
            assert window(wanted) == series(history, wanted)
        state.trim(LOOKBACK)
    assert len(state) > 0
