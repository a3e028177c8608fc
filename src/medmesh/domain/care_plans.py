"""A patient's care plan: alert thresholds, the readings they are expected to take, and who is
told first and who an unacknowledged urgent alert escalates to.

The clinical defaults, with their sources, are in `medmesh.rules.defaults`; a stored plan keeps
only what differs from them (`threshold_overrides`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every number the rules use. Levels are in the measure's canonical unit (%, mm[Hg],
    mg/dL, /min); "below" means strictly below, "above" strictly above."""

    # Oxygen saturation, sustained: every reading below `spo2_low` for `spo2_sustain_minutes`.
    spo2_low: float
    spo2_critical: float
    spo2_clear: float
    spo2_sustain_minutes: float
    spo2_recover_minutes: float
    # Blood pressure: one reading above either level is a hypertensive crisis.
    systolic_crisis: float
    diastolic_crisis: float
    systolic_clear: float
    diastolic_clear: float
    # Glucose (capillary or CGM).
    glucose_low: float
    glucose_urgent_low: float
    glucose_low_clear: float
    glucose_high: float
    glucose_high_clear: float
    # CGM glucose rate of change, mg/dL per minute over the trend window.
    glucose_fall_rate: float
    glucose_fall_clear: float
    glucose_trend_minutes: float
    # Heart rate, sustained like SpO2.
    heart_rate_low: float
    heart_rate_high: float
    heart_rate_low_clear: float
    heart_rate_high_clear: float
    heart_rate_sustain_minutes: float
    heart_rate_recover_minutes: float
    # NEWS2 (partial: see docs/alerts.md).
    news2_urgent: float
    news2_critical: float
    news2_spo2_scale: float
    news2_max_age_minutes: float
    news2_min_parameters: float
    news2_recover_minutes: float
    # A device unheard of for longer than this (or twice its scheduled interval) is stale.
    stale_after_minutes: float
    # An urgent or critical alert nobody acknowledged within this long escalates.
    escalate_urgent_minutes: float
    escalate_critical_minutes: float

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def with_overrides(self, overrides: Mapping[str, float]) -> Thresholds:
        return dataclasses.replace(self, **overrides)

    def minutes(self, name: str) -> timedelta:
        return timedelta(minutes=float(getattr(self, name)))

    def problems(self) -> list[str]:
        """What makes these thresholds unusable together (names only, never values)."""
        ordered = [
            ("spo2_critical", "spo2_low", "spo2_clear"),
            ("glucose_urgent_low", "glucose_low", "glucose_low_clear"),
            ("glucose_high_clear", "glucose_high"),
            ("systolic_clear", "systolic_crisis"),
            ("diastolic_clear", "diastolic_crisis"),
            ("heart_rate_low", "heart_rate_low_clear", "heart_rate_high_clear", "heart_rate_high"),
            ("glucose_fall_clear", "glucose_fall_rate"),
            ("news2_urgent", "news2_critical"),
        ]
        found = [
            f"{' <= '.join(names)} must hold"
            for names in ordered
            if any(getattr(self, a) > getattr(self, b) for a, b in itertools.pairwise(names))
        ]
        negative = [n for n in self.names() if getattr(self, n) < 0]
        if negative:
            found.append(f"{', '.join(negative)} must not be negative")
        if self.news2_spo2_scale not in (1, 2):
            found.append("news2_spo2_scale must be 1 or 2")
        if not 1 <= self.news2_min_parameters <= 5:
            found.append("news2_min_parameters must be 1 to 5")
        windows = ("stale_after_minutes", "glucose_trend_minutes", "news2_max_age_minutes")
        found += [f"{n} must be above 0" for n in windows if getattr(self, n) <= 0]
        return found


@dataclass(frozen=True, slots=True)
class Schedule:
    """Readings the patient is expected to take: measure key (`blood-pressure`) → readings a
    day, counted over calendar days in `timezone` (an IANA name)."""

    per_day: Mapping[str, int] = field(default_factory=dict)
    timezone: str = "UTC"

    def interval(self, measure_key: str) -> timedelta | None:
        """The expected time between two readings of a measure, if it is scheduled."""
        count = self.per_day.get(measure_key)
        return None if not count else timedelta(days=1) / count


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """One step of an escalation chain: who is paged (`to`: "primary" the plan's primary
    clinician, "team" whoever is on call in team `ref`, "lead" that team's lead, "user" the
    account `ref`) and how long, per severity, the step waits for an acknowledgement before
    the next is paged (minutes; a severity not named uses the plan's escalate_* threshold)."""

    to: str
    ref: str | None = None
    after: Mapping[str, float] = field(default_factory=dict)


STEP_TARGETS = ("primary", "team", "lead", "user")


@dataclass(frozen=True, slots=True)
class CarePlan:
    patient_id: str
    threshold_overrides: Mapping[str, float] = field(default_factory=dict)
    schedule: Schedule = field(default_factory=Schedule)
    primary_clinician: str | None = None
    escalation_clinician: str | None = None  # free text, kept from before chains
    escalation_chain: tuple[EscalationStep, ...] = ()  # empty: the default chain
    updated_at: datetime | None = None  # None: no plan stored, the defaults apply
    updated_by: str | None = None
