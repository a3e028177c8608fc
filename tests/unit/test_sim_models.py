"""Simulated patients: believable physiology, plausible values, and a faulty device."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import orjson

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.validation import check_effective_time, resolve_measure, validate_values
from medmesh.ingest.native import parse_item
from medmesh.sim.faults import BadDevice, Garbage
from medmesh.sim.models import (
    DAY,
    AtrialFibrillationPatient,
    CopdPatient,
    HypertensivePatient,
    PhysiologicModel,
    StablePatient,
    Type1DiabeticPatient,
    demo_patients,
)

MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)


def series(model: PhysiologicModel, kind: str, days: int = 1) -> list[tuple[datetime, Any]]:
    readings = model.readings_between(MIDNIGHT, MIDNIGHT + days * DAY)
    return [(datetime.fromisoformat(r["time"]), r["value"]) for r in readings if r["type"] == kind]


def runs_below(values: list[float], limit: float) -> int:
    """How many separate stretches of consecutive values are below `limit`."""
    below = [v < limit for v in values]
    return sum(1 for i, b in enumerate(below) if b and (i == 0 or not below[i - 1]))


def hours(at: datetime) -> float:
    return at.hour + at.minute / 60


def refusal(reading: dict[str, Any]) -> RejectReason | None:
    """Why the platform's validation would refuse `reading`, or None if it would accept it."""
    try:
        raw = parse_item(reading)
        validate_values(resolve_measure(raw.measure), raw)
        check_effective_time(raw.effective, MIDNIGHT + 30 * DAY, timedelta(minutes=5))
    except InvalidReading as exc:
        return exc.reason
    return None


def parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def test_copd_patient_desaturates_in_episodes_but_a_stable_patient_never_below_90() -> None:
    copd = [v for _, v in series(CopdPatient("copd", seed=1), "oxygen-saturation")]
    stable = [v for _, v in series(StablePatient("stable", seed=1), "oxygen-saturation")]

    assert 91 <= statistics.median(copd) <= 93
    assert runs_below(copd, 90) >= 3  # several separate dips…
    assert min(copd) <= 88
    assert sum(v < 90 for v in copd) < 0.1 * len(copd)  # …not a low baseline
    assert min(stable) >= 94


def test_copd_patient_breathes_fast() -> None:
    rates = [v for _, v in series(CopdPatient("copd", seed=2), "respiratory-rate")]
    assert statistics.median(rates) >= 20


def test_diabetic_cgm_reads_every_five_minutes_with_meal_peaks_and_a_nocturnal_low() -> None:
    glucose = series(Type1DiabeticPatient("t1d", seed=3), "cgm-glucose")

    assert len(glucose) == 288
    assert all(b - a == timedelta(minutes=5) for (a, _), (b, _) in pairwise(glucose))
    for meal in (7.5, 12.5, 19.0):
        after = [v for t, v in glucose if meal + 0.5 <= hours(t) <= meal + 2.5]
        assert max(after) > 180, meal
    night = [v for t, v in glucose if 2 <= hours(t) < 4]
    assert min(night) < 70
    assert min(night) >= 50
    late_afternoon = [v for t, v in glucose if 16.5 <= hours(t) < 18.5]
    assert statistics.mean(late_afternoon) < 180  # the peaks decay


def test_hypertensive_morning_systolic_is_higher_than_afternoon() -> None:
    patient = HypertensivePatient("htn", seed=4, cadences={"blood-pressure": timedelta(minutes=15)})
    pressures = series(patient, "blood-pressure", days=3)
    morning = [v["systolic"] for t, v in pressures if 7 <= hours(t) < 10]
    afternoon = [v["systolic"] for t, v in pressures if 14 <= hours(t) < 17]

    assert statistics.mean(morning) - statistics.mean(afternoon) >= 10
    assert statistics.mean(afternoon) >= 140  # hypertensive all day


def test_morning_surge_follows_the_patients_local_time() -> None:
    new_york = timezone(timedelta(hours=-5))
    patient = HypertensivePatient(
        "htn", seed=4, tz=new_york, cadences={"blood-pressure": timedelta(minutes=15)}
    )
    pressures = series(patient, "blood-pressure", days=3)
    local_morning = [v["systolic"] for t, v in pressures if 12 <= hours(t) < 15]  # 07–10 local
    utc_morning = [v["systolic"] for t, v in pressures if 7 <= hours(t) < 10]  # 02–05 local

    assert statistics.mean(local_morning) - statistics.mean(utc_morning) >= 10


def test_atrial_fibrillation_heart_rate_varies_far_more_than_a_stable_patients() -> None:
    def successive_sd(model: PhysiologicModel) -> float:
        rates: list[float] = [v for _, v in series(model, "heart-rate")]
        return statistics.stdev(b - a for a, b in pairwise(rates))

    af_rates = [v for _, v in series(AtrialFibrillationPatient("af", seed=5), "heart-rate")]
    deciles = statistics.quantiles(af_rates, n=10)

    assert successive_sd(AtrialFibrillationPatient("af", seed=5)) > 3 * successive_sd(
        StablePatient("stable", seed=5)
    )
    assert deciles[0] >= 85
    assert deciles[-1] <= 145


def test_every_reading_of_the_patient_models_would_be_accepted() -> None:
    for patient in demo_patients(seed=11):
        readings = patient.readings_between(MIDNIGHT, MIDNIGHT + DAY)
        assert readings
        assert Counter(refusal(r) for r in readings) == {None: len(readings)}, patient.name
        assert len({r["id"] for r in readings}) == len(readings)


def test_models_are_deterministic_given_a_seed() -> None:
    def day(seed: int) -> list[dict[str, Any]]:
        return Type1DiabeticPatient("t1d", seed=seed).readings_between(MIDNIGHT, MIDNIGHT + DAY)

    assert day(1) == day(1)
    assert day(1) != day(2)
    assert demo_patients(seed=3)[4].readings(MIDNIGHT) == demo_patients(seed=3)[4].readings(
        MIDNIGHT
    )


def test_a_minute_by_minute_backfill_gives_the_same_readings_as_one_query() -> None:
    patient = CopdPatient("copd", seed=6)
    minute_by_minute = [
        r for m in range(1, 24 * 60 + 1) for r in patient.readings(MIDNIGHT + timedelta(minutes=m))
    ]
    start, end = MIDNIGHT + timedelta(minutes=1), MIDNIGHT + DAY + timedelta(seconds=1)
    assert minute_by_minute == patient.readings_between(start, end)


def test_about_the_configured_fraction_of_a_bad_devices_readings_is_garbage() -> None:
    clean = StablePatient("faulty", seed=8)
    faulty = BadDevice(clean, probability=0.1, seed=8)
    good = {r["id"]: r for r in clean.readings_between(MIDNIGHT, MIDNIGHT + 3 * DAY)}
    sent = 0
    in_bad_bodies = 0
    spoiled: list[dict[str, Any]] = []
    seen: set[str] = set()
    for minute in range(1, 3 * 24 * 60):
        batch = faulty.readings(MIDNIGHT + timedelta(minutes=minute))
        sent += len(batch)
        if not parses(faulty.encode(batch)):
            in_bad_bodies += len(batch)
            continue
        for reading in batch:
            if reading != good[reading["id"]] or reading["id"] in seen:
                spoiled.append(reading)
            seen.add(reading["id"])

    assert 0.08 <= (in_bad_bodies + len(spoiled)) / sent <= 0.12
    assert 0.01 <= in_bad_bodies / sent <= 0.03  # a sixth of the garbage: whole bodies
    reasons = Counter(refusal(r) for r in spoiled)
    assert set(reasons) == {
        None,  # resends: accepted, stored once
        RejectReason.MALFORMED,
        RejectReason.UNKNOWN_CODE,
        RejectReason.IMPLAUSIBLE_VALUE,
        RejectReason.UNIT_NOT_CONVERTIBLE,
        RejectReason.FUTURE_TIMESTAMP,
    }
    assert all(n > len(spoiled) / 10 for n in reasons.values())  # every kind shows up


def test_a_bad_device_sends_malformed_json_bodies_at_the_configured_rate() -> None:
    faulty = BadDevice(
        StablePatient("faulty", seed=9), probability=0.2, seed=9, kinds=(Garbage.MALFORMED_JSON,)
    )
    bodies = [
        faulty.encode(faulty.readings(MIDNIGHT + timedelta(minutes=m))) for m in range(1, 2001)
    ]
    assert 0.16 <= sum(not parses(b) for b in bodies) / len(bodies) <= 0.24
    assert faulty.readings(MIDNIGHT) == faulty.model.readings(MIDNIGHT)  # readings themselves fine


def test_a_bad_device_limited_to_some_kinds_sends_only_those() -> None:
    faulty = BadDevice(
        StablePatient("faulty", seed=10), probability=0.5, kinds=(Garbage.UNKNOWN_TYPE,)
    )
    readings = faulty.readings_between(MIDNIGHT, MIDNIGHT + DAY)
    assert {refusal(r) for r in readings} == {None, RejectReason.UNKNOWN_CODE}
    assert all(parses(faulty.encode(readings[i : i + 10])) for i in range(0, 1000, 10))
    always = BadDevice(faulty.model, 1.0, kinds=(Garbage.MALFORMED_JSON,))
    assert not parses(always.encode(readings[:10]))
