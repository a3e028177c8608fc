"""The device measurements medmesh understands, with their LOINC codes and UCUM units.

Codes follow the FHIR R4 vital-signs profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html)
and, for continuous glucose monitoring, the HL7 CGM implementation guide. Plausibility ranges are
physiologic limits beyond which a value is a device fault, not a patient state: they reject
garbage, they are not alert thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


class Category(StrEnum):
    """FHIR observation-category codes (http://terminology.hl7.org/CodeSystem/observation-category)."""

    VITAL_SIGNS = "vital-signs"
    LABORATORY = "laboratory"
    ACTIVITY = "activity"


@dataclass(frozen=True, slots=True)
class Quantity:
    """One measured quantity: LOINC code, canonical UCUM unit, plausible range (inclusive)."""

    key: str
    code: str
    display: str
    unit: str
    low: float
    high: float
    also_codes: tuple[str, ...] = ()
    # Other UCUM units devices may send for this quantity; each converts (domain/units.py).
    # A conversion that exists but is not listed here (mmol/L for a cholesterol-like measure,
    # should one be added) is refused: units.py converts by unit, not by quantity.
    alt_units: tuple[str, ...] = ()
    # Counted, not measured (steps): only whole numbers are plausible.
    whole: bool = False

    def is_plausible(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class Measure:
    """A kind of reading a device sends: a single quantity, or a panel of component quantities."""

    key: str
    code: str
    display: str
    category: Category
    quantity: Quantity | None = None
    components: tuple[Quantity, ...] = field(default=())
    also_codes: tuple[str, ...] = ()

    @property
    def is_panel(self) -> bool:
        return bool(self.components)

    def component(self, key: str) -> Quantity | None:
        return next((c for c in self.components if c.key == key), None)


def _single(
    key: str,
    code: str,
    display: str,
    unit: str,
    low: float,
    high: float,
    category: Category = Category.VITAL_SIGNS,
    also_codes: tuple[str, ...] = (),
    alt_units: tuple[str, ...] = (),
    whole: bool = False,
) -> Measure:
    quantity = Quantity(key, code, display, unit, low, high, also_codes, alt_units, whole)
    return Measure(key, code, display, category, quantity=quantity, also_codes=also_codes)


SYSTOLIC = Quantity(
    "systolic", "8480-6", "Systolic blood pressure", "mm[Hg]", 30, 300, alt_units=("kPa",)
)
DIASTOLIC = Quantity(
    "diastolic", "8462-4", "Diastolic blood pressure", "mm[Hg]", 10, 200, alt_units=("kPa",)
)

MEASURES: tuple[Measure, ...] = (
    _single("heart-rate", "8867-4", "Heart rate", "/min", 20, 300),
    _single("respiratory-rate", "9279-1", "Respiratory rate", "/min", 2, 80),
    # The oxygensat profile requires 2708-6; 59408-5 says it was measured by pulse oximetry.
    _single(
        "oxygen-saturation",
        "2708-6",
        "Oxygen saturation in Arterial blood",
        "%",
        50,
        100,
        also_codes=("59408-5",),
        alt_units=("1",),
    ),
    _single("body-temperature", "8310-5", "Body temperature", "Cel", 25, 45, alt_units=("[degF]",)),
    Measure(
        "blood-pressure",
        "85354-9",
        "Blood pressure panel with all children optional",
        Category.VITAL_SIGNS,
        components=(SYSTOLIC, DIASTOLIC),
    ),
    _single("body-weight", "29463-7", "Body weight", "kg", 0.2, 650, alt_units=("[lb_av]", "g")),
    _single(
        "blood-glucose",
        "41653-7",
        "Glucose [Mass/volume] in Capillary blood by Glucometer",
        "mg/dL",
        10,
        1000,
        Category.LABORATORY,
        alt_units=("mmol/L",),
    ),
    _single(
        "cgm-glucose",
        "99504-3",
        "Glucose [Mass/volume] in Interstitial fluid",
        "mg/dL",
        20,
        600,
        Category.LABORATORY,
        alt_units=("mmol/L",),
    ),
    # Laboratory results a hospital's laboratory sends over HL7 (ORU^R01 with LOINC-coded
    # OBX, docs/hl7.md). Ranges are what an analyser can report, not reference ranges.
    _single(
        "serum-glucose",
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        5,
        2000,
        Category.LABORATORY,
        alt_units=("mmol/L",),
    ),
    _single(
        "potassium",
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
        "mmol/L",
        1,
        12,
        Category.LABORATORY,
    ),
    _single(
        "sodium",
        "2951-2",
        "Sodium [Moles/volume] in Serum or Plasma",
        "mmol/L",
        90,
        200,
        Category.LABORATORY,
    ),
    _single(
        "creatinine",
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        0.05,
        40,
        Category.LABORATORY,
    ),
    _single(
        "hemoglobin",
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "g/dL",
        1,
        26,
        Category.LABORATORY,
    ),
    _single(
        "hba1c",
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        2,
        25,
        Category.LABORATORY,
    ),
    _single(
        "steps",
        "55423-8",
        "Number of steps in unspecified time Pedometer",
        "{steps}",
        0,
        200_000,
        Category.ACTIVITY,
        whole=True,
    ),
)

# The tests a hospital laboratory reports (HL7 ORU), as opposed to a patient's own devices
# (glucometer, CGM) whose readings share the laboratory category.
LABORATORY_TESTS: tuple[str, ...] = ("2345-7", "2823-3", "2951-2", "2160-0", "718-7", "4548-4")

_BY_KEY: dict[str, Measure] = {m.key: m for m in MEASURES}
_BY_CODE: dict[str, Measure] = {}
for _m in MEASURES:
    for _code in (_m.code, *_m.also_codes):
        _BY_CODE[_code] = _m


def measure_by_key(key: str) -> Measure | None:
    """The measure a device names by our short key, e.g. ``heart-rate``."""
    return _BY_KEY.get(key)


def measure_by_code(code: str) -> Measure | None:
    """The measure for a LOINC code, its primary code or an accepted alternative."""
    return _BY_CODE.get(code)


def quantity_by_code(code: str) -> Quantity | None:
    """A single quantity or a panel component by its LOINC code."""
    measure = _BY_CODE.get(code)
    if measure is not None and measure.quantity is not None:
        return measure.quantity
    for m in MEASURES:
        for c in m.components:
            if c.code == code:
                return c
    return None


# In a list of stored codes, stands for every code outside this vocabulary: the tests a hospital
# laboratory reports under any LOINC code (HL7 ORU, docs/hl7.md), all of the laboratory category.
# The store turns it into "code not in VOCABULARY_CODES" (store/observations.py, code_in).
OTHER_LABORATORY_CODES = "*other-laboratory"
# The codes observations are stored under for the measures above (primary codes only).
VOCABULARY_CODES: frozenset[str] = frozenset(m.code for m in MEASURES)


def codes_in_categories(categories: Collection[str]) -> tuple[str, ...]:
    """The stored codes of every measure in these observation categories, with
    OTHER_LABORATORY_CODES when the laboratory category is among them."""
    known = sorted(m.code for m in MEASURES if m.category.value in categories)
    other = (OTHER_LABORATORY_CODES,) if Category.LABORATORY.value in categories else ()
    return (*known, *other)


def is_laboratory_test(code: str) -> bool:
    """A result a hospital laboratory reports: one of LABORATORY_TESTS or any code outside the
    vocabulary (only laboratories store those)."""
    return code in LABORATORY_TESTS or code not in VOCABULARY_CODES


def laboratory_test(code: str, unit: str) -> Measure:
    """The measure of a laboratory result whose LOINC code is outside the vocabulary: a single
    number in the unit the laboratory reported it in (no conversion, no plausible range: the
    laboratory's own reference range and flag say what is normal)."""
    quantity = Quantity(code, code, code, unit, -math.inf, math.inf)
    return Measure(code, code, code, Category.LABORATORY, quantity=quantity)


def stored_measure(code: str, unit: str | None) -> Measure:
    """The measure an observation stored under `code` is of: the vocabulary's, else a
    laboratory test."""
    return measure_by_code(code) or laboratory_test(code, unit or "")


def category_of(code: str) -> Category:
    """The observation category of a stored code (laboratory for codes outside the vocabulary)."""
    measure = measure_by_code(code)
    return measure.category if measure is not None else Category.LABORATORY
