"""Physiologic models of simulated patients (a faulty device is in faults.py).

Every value is a pure function of (seed, measure, sample time): a model backfills history, runs
faster than real time, and produces the same reading, with the same message id, when asked again.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar, Protocol

from medmesh.domain.vocabulary import MEASURES, Quantity, measure_by_key

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CADENCES: Mapping[str, timedelta] = {
    "heart-rate": MINUTE,  # wearable / pulse oximeter, one averaged value a minute
    "oxygen-saturation": MINUTE,
    "respiratory-rate": 5 * MINUTE,
    "blood-pressure": 6 * HOUR,  # home cuff a few times a day
    "body-temperature": 6 * HOUR,
    "body-weight": DAY,
    "steps": HOUR,  # steps counted over the preceding hour
}
# The demo shows every measure within minutes of starting.
DEMO_CADENCES: Mapping[str, timedelta] = {
    "blood-pressure": 5 * MINUTE,
    "body-temperature": 15 * MINUTE,
    "body-weight": HOUR,
}
Value = float | dict[str, float]
_UNITS = {m.key: (m.quantity or m.components[0]).unit for m in MEASURES}


class PatientModel(Protocol):
    """What the demo, the devices and the load generator need from a simulated patient."""

    @property
    def name(self) -> str: ...

    def readings(self, at: datetime, sequence: int = 0) -> list[dict[str, Any]]: ...

    def readings_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...

    def readings_per_day(self) -> float: ...

    def encode(self, readings: Sequence[dict[str, Any]]) -> bytes: ...


def stamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as devices send it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quantity(key: str, component: str | None = None) -> Quantity:
    measure = measure_by_key(key)
    assert measure is not None, key
    quantity = measure.component(component) if component else measure.quantity
    assert quantity is not None, (key, component)
    return quantity


def _plausible(key: str, value: float, component: str | None = None) -> float:
    """Clamp into the vocabulary's plausible range: a model never sends a device fault."""
    quantity = _quantity(key, component)
    return min(quantity.high, max(quantity.low, value))


@functools.lru_cache(maxsize=65_536)
def _uniforms(key: str, count: int) -> tuple[float, ...]:
    """`count` fixed draws in [0, 1) for `key`: the plan of a day, an hour, an episode."""
    rng = random.Random(key)  # str seeds are hashed with SHA-512: the same in every process
    return tuple(rng.random() for _ in range(count))


def _between(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


def _circadian(hours: float) -> float:
    """-1 at 04:00, +1 at 16:00 local: the core-temperature and heart-rate rhythm."""
    return -math.cos(2 * math.pi * (hours - 4) / 24)


def _asleep(hours: float) -> bool:
    return hours < 6 or hours >= 23


@dataclass(frozen=True, slots=True)
class PhysiologicModel:
    """A patient in good health; the other models change what differs in their condition.

    `cadences` overrides how often a measure is sampled (slots aligned on the epoch, in UTC).
    """

    name: str
    seed: int = 0
    tz: tzinfo = UTC
    cadences: Mapping[str, timedelta] = field(default_factory=dict)
    heart_rate: float = 68.0
    systolic: float = 122.0
    diastolic: float = 78.0
    spo2: float = 97.5
    respiration: float = 14.0
    temperature: float = 36.7
    weight: float = 72.0
    extra_cadences: ClassVar[Mapping[str, timedelta]] = {}

    def schedule(self) -> dict[str, timedelta]:
        return {**CADENCES, **self.extra_cadences, **self.cadences}

    def readings_per_day(self) -> float:
        return sum(DAY / period for period in self.schedule().values())

    def _key(self, *parts: object) -> str:
        return "/".join(str(p) for p in (type(self).__name__, self.seed, *parts))

    def _plan(self, count: int, *parts: object) -> tuple[float, ...]:
        return _uniforms(self._key(*parts), count)

    def _hours(self, at: datetime) -> float:
        local = at.astimezone(self.tz)
        return local.hour + local.minute / 60 + local.second / 3600

    def value(self, key: str, at: datetime) -> Value:
        """The value the patient's device measures for `key` at `at`, within plausible range."""
        rng = random.Random(self._key(key, int(at.timestamp())))
        raw = self._sample(key, at, rng)
        if isinstance(raw, dict):
            return {part: round(_plausible(key, v, part)) for part, v in raw.items()}
        digits = 1 if key in ("body-temperature", "body-weight") else None
        return round(_plausible(key, raw), digits)

    def _sample(self, key: str, at: datetime, rng: random.Random) -> Value:
        h = self._hours(at)
        if key == "heart-rate":
            return self._heart_rate(at, rng)
        if key == "oxygen-saturation":
            return min(100.0, self.spo2 + rng.gauss(0, 0.6))
        if key == "respiratory-rate":
            return self.respiration + rng.gauss(0, 1.0)
        if key == "blood-pressure":
            return self._blood_pressure(at, rng)
        if key == "body-temperature":
            return self.temperature + 0.3 * _circadian(h) + rng.gauss(0, 0.1)
        if key == "body-weight":
            days = at.timestamp() / 86400
            return self.weight + 0.4 * math.sin(2 * math.pi * days / 30) + rng.gauss(0, 0.2)
        if key == "steps":
            return rng.uniform(0, 30) if _asleep(h) else rng.uniform(200, 1400)
        raise KeyError(key)

    def _heart_rate(self, at: datetime, rng: random.Random) -> float:
        h = self._hours(at)
        return self.heart_rate + 4 * _circadian(h) + (0 if _asleep(h) else 5) + rng.gauss(0, 2.5)

    def _blood_pressure(self, at: datetime, rng: random.Random) -> dict[str, float]:
        dip = 0.1 if _asleep(self._hours(at)) else 0.0  # normal nocturnal dipping
        return {
            "systolic": self.systolic * (1 - dip) + rng.gauss(0, 5),
            "diastolic": self.diastolic * (1 - dip) + rng.gauss(0, 4),
        }

    def reading(self, key: str, at: datetime) -> dict[str, Any]:
        """The native-format reading for the sample of `key` taken at `at`."""
        seconds = int(at.timestamp())
        return {
            "id": f"{key}-{seconds}",
            "type": key,
            "time": stamp(at),
            "value": self.value(key, at),
            "unit": _UNITS[key],
        }

    def readings_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every sample taken in [start, end), in time order."""
        first, last = math.ceil(start.timestamp()), math.ceil(end.timestamp())
        due: list[tuple[int, int, str]] = []
        for order, (key, period) in enumerate(self.schedule().items()):
            step = int(period.total_seconds())
            due += [(t, order, key) for t in range(-(-first // step) * step, last, step)]
        due.sort()
        return [self.reading(key, datetime.fromtimestamp(t, UTC)) for t, _, key in due]

    def readings(self, at: datetime, sequence: int = 0) -> list[dict[str, Any]]:
        """The samples taken in the minute up to and including `at` (one call a minute).

        `sequence` is unused (message ids come from sample times); kept for old callers.
        """
        edge = timedelta(seconds=1)
        return self.readings_between(at - MINUTE + edge, at + edge)

    def encode(self, readings: Sequence[dict[str, Any]]) -> bytes:
        """The native JSON body for a batch."""
        return json.dumps({"readings": list(readings)}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class StablePatient(PhysiologicModel):
    """Well-controlled vitals: a daily rhythm and measurement noise, nothing else."""


@dataclass(frozen=True, slots=True)
class HypertensivePatient(PhysiologicModel):
    """Stage 2 hypertension, blunted nocturnal dip, and a morning surge peaking near 08:30."""

    heart_rate: float = 76.0
    systolic: float = 148.0
    diastolic: float = 92.0

    def _blood_pressure(self, at: datetime, rng: random.Random) -> dict[str, float]:
        h = self._hours(at)
        (u,) = self._plan(1, "surge", at.astimezone(self.tz).date())
        surge = _between(15, 25, u)
        window = math.sin(math.pi * (h - 6) / 5) ** 2 if 6 <= h <= 11 else 0.0
        dip = 0.05 if _asleep(h) else 0.0  # "non-dipper": under 10 % at night
        return {
            "systolic": self.systolic * (1 - dip) + surge * window + rng.gauss(0, 5),
            "diastolic": self.diastolic * (1 - dip) + surge / 2 * window + rng.gauss(0, 4),
        }


@dataclass(frozen=True, slots=True)
class Type1DiabeticPatient(PhysiologicModel):
    """CGM every 5 minutes: post-meal peaks, slow decay, and a nocturnal low around 03:00."""

    heart_rate: float = 74.0
    glucose: float = 125.0  # mg/dL between meals
    meals: tuple[float, ...] = (7.5, 12.5, 19.0)  # local hours
    extra_cadences: ClassVar[Mapping[str, timedelta]] = {"cgm-glucose": 5 * MINUTE}

    def _sample(self, key: str, at: datetime, rng: random.Random) -> Value:
        if key != "cgm-glucose":
            return PhysiologicModel._sample(self, key, at, rng)
        return self._glucose(at) + rng.gauss(0, 4)

    def _drift(self, at: datetime) -> float:
        return 8 * math.sin(2 * math.pi * at.timestamp() / (7.3 * 3600) + self.seed)

    def _glucose(self, at: datetime) -> float:
        h = self._hours(at)
        today = at.astimezone(self.tz).date()
        level = self.glucose + self._drift(at)
        for offset in (-1, 0):  # yesterday's dinner still counts after midnight
            plan = self._plan(3 * len(self.meals), "meals", today + timedelta(days=offset))
            for i, meal in enumerate(self.meals):
                shift, rise, peak = plan[3 * i : 3 * i + 3]
                since = h - (meal + _between(-0.5, 0.5, shift) + 24 * offset)
                rise, peak = _between(0.75, 1.5, rise), _between(80, 130, peak)  # h, mg/dL
                if since > 0:  # gamma-shaped absorption: peak at `rise` hours, then decay
                    level += peak * (since / rise) ** 2 * math.exp(2 * (1 - since / rise))
        shift, low = self._plan(2, "night", today)
        centre, nadir = 3 + _between(-0.4, 0.4, shift), _between(55, 65, low)
        centre_at = at + timedelta(hours=centre - h)
        depth = self.glucose + self._drift(centre_at) - nadir
        return level - depth * math.exp(-(((h - centre) / 0.6) ** 2))


@dataclass(frozen=True, slots=True)
class CopdPatient(PhysiologicModel):
    """Chronic hypoxaemia (SpO2 ~92 %), tachypnoea, and desaturation episodes of a few minutes."""

    heart_rate: float = 86.0
    spo2: float = 92.0
    respiration: float = 22.0
    episodes_per_hour: float = 0.3

    def desaturation(self, at: datetime) -> tuple[float, float]:
        """(fraction 0..1 of the episode's depth, nadir SpO2) at `at`; (0, spo2) outside."""
        now = at.timestamp()
        for hour in (int(now // 3600) - 1, int(now // 3600)):
            happens, start, length, nadir = self._plan(4, "desaturation", hour)
            if happens >= self.episodes_per_hour:
                continue
            start = hour * 3600 + 3600 * start
            length, nadir = _between(180, 600, length), _between(83, 88, nadir)
            if start <= now <= start + length:
                return math.sin(math.pi * (now - start) / length), nadir
        return 0.0, self.spo2

    def _sample(self, key: str, at: datetime, rng: random.Random) -> Value:
        depth, nadir = self.desaturation(at)
        if key == "oxygen-saturation":
            return self.spo2 - depth * (self.spo2 - nadir) + rng.gauss(0, 0.6)
        if key == "respiratory-rate":
            return self.respiration + 6 * depth + rng.gauss(0, 1.5)
        if key == "heart-rate":
            return self._heart_rate(at, rng) + 12 * depth
        return PhysiologicModel._sample(self, key, at, rng)


@dataclass(frozen=True, slots=True)
class AtrialFibrillationPatient(PhysiologicModel):
    """Irregularly irregular ventricular response: each minute's rate averages 5 random beats."""

    heart_rate: float = 112.0

    def _heart_rate(self, at: datetime, rng: random.Random) -> float:
        # The ventricular response drifts every 10 minutes; beat-to-beat intervals are iid.
        (u,) = self._plan(1, "response", int(at.timestamp()) // 600)
        level = _between(-10, 10, u)
        mean_rr = 60 / (self.heart_rate + 6 * _circadian(self._hours(at)) + level)
        intervals = [mean_rr * rng.lognormvariate(0, 0.25) for _ in range(5)]
        return 60 * len(intervals) / sum(intervals)


DEMO_PATIENTS: tuple[tuple[str, type[PhysiologicModel]], ...] = (
    ("stable", StablePatient),
    ("hypertensive", HypertensivePatient),
    ("type-1-diabetic", Type1DiabeticPatient),
    ("copd", CopdPatient),
    ("atrial-fibrillation", AtrialFibrillationPatient),
)


def demo_patients(
    seed: int = 7,
    tz: tzinfo = UTC,
    cadences: Mapping[str, timedelta] = DEMO_CADENCES,
    garbage: float = 0.0,
) -> list[PatientModel]:
    """The demo's patients; with `garbage` > 0, also a faulty device sending that fraction."""
    rng = random.Random(seed)
    out: list[PatientModel] = [
        kind(name, seed=rng.randrange(2**32), tz=tz, cadences=cadences)
        for name, kind in DEMO_PATIENTS
    ]
    if garbage > 0:
        from medmesh.sim.faults import BadDevice  # faults wraps models: imported late

        faulty = StablePatient("faulty-device", seed=rng.randrange(2**32), tz=tz, cadences=cadences)
        out.append(BadDevice(faulty, garbage, seed=seed))
    return out
