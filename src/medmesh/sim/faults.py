"""A faulty device: wraps a patient model and now and then sends garbage, to exercise the
platform's dead-letter path."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from medmesh.sim.models import PhysiologicModel, stamp


class Garbage(StrEnum):
    """What a faulty device sends instead of a good reading."""

    MALFORMED_JSON = "malformed-json"  # the whole body
    MALFORMED = "malformed"  # a reading with a field that is not what the format says
    UNKNOWN_TYPE = "unknown-type"
    IMPLAUSIBLE_VALUE = "implausible-value"
    WRONG_UNIT = "wrong-unit"
    FUTURE_TIME = "future-time"
    DUPLICATE = "duplicate"  # a resend of the same message (not an error: stored once)


def _spoil(reading: dict[str, Any], kind: Garbage) -> list[dict[str, Any]]:
    bad = dict(reading)
    if kind is Garbage.MALFORMED:
        bad["value"] = "n/a"
    elif kind is Garbage.UNKNOWN_TYPE:
        bad["type"] = "x-vendor-mood-index"
    elif kind is Garbage.IMPLAUSIBLE_VALUE:
        v = bad["value"]
        bad["value"] = {k: 9999 for k in v} if isinstance(v, dict) else -1 - 1000 * abs(v)
    elif kind is Garbage.WRONG_UNIT:
        bad["unit"] = "/min" if bad["type"] == "blood-pressure" else "mm[Hg]"
    elif kind is Garbage.FUTURE_TIME:
        bad["time"] = stamp(datetime.fromisoformat(bad["time"]) + timedelta(days=3650))
    else:
        return [reading, bad]
    return [bad]


@dataclass(frozen=True, slots=True)
class BadDevice:
    """Wraps a model so that about `probability` of what it sends is garbage, shared evenly among
    `kinds`: a malformed JSON body spoils its whole batch, the others one reading each.
    Deterministic given `seed`."""

    model: PhysiologicModel
    probability: float = 0.05
    seed: int = 0
    kinds: tuple[Garbage, ...] = tuple(Garbage)

    @property
    def name(self) -> str:
        return self.model.name

    def readings_per_day(self) -> float:
        return self.model.readings_per_day()

    def _spoiled(self, readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        per_reading = [k for k in self.kinds if k is not Garbage.MALFORMED_JSON]
        chance = self.probability * len(per_reading) / len(self.kinds)
        out: list[dict[str, Any]] = []
        for reading in readings:
            rng = random.Random(f"bad/{self.seed}/{self.model.seed}/{reading['id']}")
            if per_reading and rng.random() < chance:
                out += _spoil(reading, rng.choice(per_reading))
            else:
                out.append(reading)
        return out

    def readings(self, at: datetime, sequence: int = 0) -> list[dict[str, Any]]:
        return self._spoiled(self.model.readings(at, sequence))

    def readings_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._spoiled(self.model.readings_between(start, end))

    def encode(self, readings: Sequence[dict[str, Any]]) -> bytes:
        body = self.model.encode(readings)
        first = readings[0]["id"] if readings else ""
        rng = random.Random(f"bad-body/{self.seed}/{first}/{len(readings)}")
        chance = self.probability / len(self.kinds)
        if Garbage.MALFORMED_JSON in self.kinds and rng.random() < chance:
            return body[: len(body) // 2]  # cut off mid-way, as a dropped connection leaves it
        return body
