"""The laboratory results card of the patient page: a hospital laboratory's latest results
(HL7 ORU, docs/hl7.md) with their reference range and flag, beside the vital-sign charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from medmesh.domain.vocabulary import measure_by_code
from medmesh.store.observations import StoredObservation

# HL7 table 0078 (and v3 ObservationInterpretation): the flags laboratories send.
_FLAGS = {
    "N": "Normal",
    "H": "High",
    "L": "Low",
    "HH": "Critically high",
    "LL": "Critically low",
    "A": "Abnormal",
    "AA": "Critically abnormal",
}


@dataclass(frozen=True, slots=True)
class LabRow:
    test: str
    comparator: str | None  # "<" for a result reported as "<5"
    status: str  # final, preliminary or corrected
    value: float
    unit: str
    reference_range: str | None
    flag: str | None  # in words
    abnormal: bool
    taken: datetime


def lab_row(observation: StoredObservation) -> LabRow:
    measure = measure_by_code(observation.code)
    value = observation.values[0]
    lab = observation.lab
    code = lab.interpretation if lab is not None else None
    name = lab.display if lab is not None and lab.display else observation.code
    return LabRow(
        test=measure.display if measure is not None else name,
        comparator=lab.comparator if lab is not None else None,
        status=lab.status if lab is not None else "final",
        value=value.value,
        unit=value.unit,
        reference_range=observation.lab.reference_range if observation.lab is not None else None,
        flag=_FLAGS.get(code, code) if code else None,
        abnormal=code not in (None, "N"),
        taken=observation.effective,
    )
