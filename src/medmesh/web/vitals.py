"""The vital signs the dashboard shows: which LOINC codes make each one, how it is labelled
and how its latest value reads in the patient panel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from medmesh.store.vitals import LatestValue

STALE_AFTER = timedelta(hours=2)  # an older latest value is marked as such in the panel


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One line of a chart: a quantity, i.e. an observation code or a panel's component."""

    key: str
    label: str
    code: str
    component: str | None = None

    @property
    def value_code(self) -> str:
        return self.component or self.code


@dataclass(frozen=True, slots=True)
class VitalSpec:
    key: str
    label: str
    unit: str  # for people, e.g. "mmHg" (UCUM mm[Hg])
    series: tuple[SeriesSpec, ...]
    decimals: int = 0

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.code for s in self.series))


HEART_RATE = VitalSpec("hr", "Heart rate", "/min", (SeriesSpec("hr", "Heart rate", "8867-4"),))
SPO2 = VitalSpec("spo2", "SpO₂", "%", (SeriesSpec("spo2", "SpO₂", "2708-6"),))
BLOOD_PRESSURE = VitalSpec(
    "bp",
    "Blood pressure",
    "mmHg",
    (
        SeriesSpec("sys", "Systolic", "85354-9", "8480-6"),
        SeriesSpec("dia", "Diastolic", "85354-9", "8462-4"),
    ),
)
TEMPERATURE = VitalSpec(
    "temp", "Temperature", "°C", (SeriesSpec("temp", "Temperature", "8310-5"),), decimals=1
)
GLUCOSE = VitalSpec(
    "glucose",
    "Glucose",
    "mg/dL",
    (SeriesSpec("bg", "Fingerstick", "41653-7"), SeriesSpec("cgm", "CGM", "99504-3")),
)
RESPIRATORY_RATE = VitalSpec(
    "rr", "Respiratory rate", "/min", (SeriesSpec("rr", "Respiratory rate", "9279-1"),)
)

PANEL_VITALS = (HEART_RATE, SPO2, BLOOD_PRESSURE, TEMPERATURE, GLUCOSE)
CHART_VITALS = (*PANEL_VITALS, RESPIRATORY_RATE)
PANEL_CODES = tuple(dict.fromkeys(code for v in PANEL_VITALS for code in v.codes))


@dataclass(frozen=True, slots=True)
class ShownValue:
    """A vital's latest value as the panel shows it."""

    text: str  # e.g. "72", "128/84", "37.2"
    at: datetime
    stale: bool


def format_value(vital: VitalSpec, values: dict[str, float]) -> str | None:
    parts = [values.get(s.value_code) for s in vital.series]
    if vital.key == "glucose":  # two sources, one value: whichever was read
        parts = [next((p for p in parts if p is not None), None)]
    if any(p is None for p in parts):
        return None
    return "/".join(f"{p:.{vital.decimals}f}" for p in parts if p is not None)


def shown(
    vital: VitalSpec,
    patient_id: str,
    latest: dict[tuple[str, str], LatestValue],
    now: datetime,
) -> ShownValue | None:
    """The newest of the vital's codes for the patient, formatted; None if never read."""
    found = [latest[(patient_id, c)] for c in vital.codes if (patient_id, c) in latest]
    if not found:
        return None
    newest = max(found, key=lambda v: v.effective)
    text = format_value(vital, newest.values)
    if text is None:
        return None
    return ShownValue(text, newest.effective, now - newest.effective > STALE_AFTER)
