"""What a rule concludes about a patient at one moment: the condition holds (`Finding`), it has
cleared with its hysteresis (`Cleared`), or neither (None: in the dead band, or too little
data), in which case any alert stays as it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from medmesh.domain.alerts import Severity


def dedupe_key(rule: str, patient_id: str, *scope: str) -> str:
    """Same rule, same patient (and device or measure, for rules scoped to one)."""
    return ":".join((rule, patient_id, *scope))


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    dedupe_key: str
    severity: Severity
    title: str
    detail: str
    at: datetime  # time of the evidence: a reading's time, or the end of a checked period
    device_id: str | None = None
    observation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Cleared:
    dedupe_key: str


Outcome = Finding | Cleared


def number(value: float) -> str:
    """A value as clinicians read it: 88, 36.8."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def duration(minutes: float) -> str:
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes / 60:.0f} h"
    return f"{minutes:.0f} min"
