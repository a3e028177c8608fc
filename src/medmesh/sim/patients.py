"""Physiologic models that produce believable readings for a simulated patient.

Deliberately simple (a baseline, a daily rhythm, noise); richer models (morning surge, meals,
desaturations, atrial fibrillation) belong to the simulation issue.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class SimulatedPatient:
    """A patient profile: baseline vitals around which readings vary."""

    name: str
    heart_rate: float = 72.0
    systolic: float = 122.0
    diastolic: float = 79.0
    spo2: float = 97.5
    temperature: float = 36.8
    glucose: float | None = None  # mg/dL baseline for a CGM wearer
    rng: random.Random = field(default_factory=random.Random)

    def _circadian(self, at: datetime) -> float:
        """-1 at 04:00, +1 at 16:00 (local rhythm approximated in UTC)."""
        hours = at.hour + at.minute / 60
        return math.sin((hours - 10) / 24 * 2 * math.pi)

    def readings(self, at: datetime, sequence: int) -> list[dict[str, Any]]:
        """The native-format readings this patient's devices would send at `at`."""
        day = self._circadian(at)
        stamp = at.isoformat().replace("+00:00", "Z")
        gauss = self.rng.gauss

        def reading(kind: str, value: Any, unit: str) -> dict[str, Any]:
            return {
                "id": f"{kind}-{sequence}",
                "type": kind,
                "time": stamp,
                "value": value,
                "unit": unit,
            }

        out = [
            reading("heart-rate", round(self.heart_rate + 6 * day + gauss(0, 2)), "/min"),
            reading("oxygen-saturation", round(min(100.0, self.spo2 + gauss(0, 0.6)), 1), "%"),
        ]
        if sequence % 5 == 0:
            out.append(
                reading(
                    "blood-pressure",
                    {
                        "systolic": round(self.systolic + 8 * day + gauss(0, 4)),
                        "diastolic": round(self.diastolic + 4 * day + gauss(0, 3)),
                    },
                    "mm[Hg]",
                )
            )
            out.append(
                reading(
                    "body-temperature",
                    round(self.temperature + 0.3 * day + gauss(0, 0.1), 1),
                    "Cel",
                )
            )
        if self.glucose is not None:
            meal = max(0.0, math.sin((at.hour % 6 + at.minute / 60) / 6 * math.pi)) ** 3
            out.append(
                reading("cgm-glucose", round(self.glucose + 70 * meal + gauss(0, 6)), "mg/dL")
            )
        return out


def demo_patients(seed: int = 7) -> list[SimulatedPatient]:
    rng = random.Random(seed)
    return [
        SimulatedPatient("stable", rng=random.Random(rng.random())),
        SimulatedPatient(
            "hypertensive",
            heart_rate=78,
            systolic=152,
            diastolic=94,
            rng=random.Random(rng.random()),
        ),
        SimulatedPatient(
            "type-1-diabetic", heart_rate=80, glucose=130, rng=random.Random(rng.random())
        ),
    ]
