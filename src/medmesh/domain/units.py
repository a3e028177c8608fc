"""Conversion of the units devices send into each measurement's canonical UCUM unit.

Only linear (or affine, for temperature) conversions between units of the same kind. UCUM codes
are case-sensitive; the aliases below are the spellings devices are known to send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medmesh.domain.errors import UnitNotConvertible

# Molar mass of glucose (C6H12O6), 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL.
GLUCOSE_MG_DL_PER_MMOL_L = 18.0156
POUNDS_PER_KILOGRAM = 2.20462262185


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """Converts values in `from_unit` to `to_unit` (both UCUM) and back."""

    from_unit: str
    to_unit: str
    forward: Callable[[float], float]
    backward: Callable[[float], float]


def _linear(from_unit: str, to_unit: str, factor: float) -> UnitConversion:
    return UnitConversion(from_unit, to_unit, lambda v: v * factor, lambda v: v / factor)


CONVERSIONS: tuple[UnitConversion, ...] = (
    _linear("mmol/L", "mg/dL", GLUCOSE_MG_DL_PER_MMOL_L),
    _linear("[lb_av]", "kg", 1 / POUNDS_PER_KILOGRAM),
    _linear("g", "kg", 0.001),
    UnitConversion("[degF]", "Cel", lambda f: (f - 32.0) * 5.0 / 9.0, lambda c: c * 9.0 / 5.0 + 32),
    _linear("kPa", "mm[Hg]", 7.50061683),
    _linear("1", "%", 100.0),
)

# Spellings seen from devices and gateways, mapped to their UCUM code.
UNIT_ALIASES: dict[str, str] = {
    "bpm": "/min",
    "beats/min": "/min",
    "{beats}/min": "/min",
    "breaths/min": "/min",
    "{breaths}/min": "/min",
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "mg/dl": "mg/dL",
    "mmol/l": "mmol/L",
    "°c": "Cel",
    "c": "Cel",
    "degc": "Cel",
    "celsius": "Cel",
    "°f": "[degF]",
    "f": "[degF]",
    "degf": "[degF]",
    "fahrenheit": "[degF]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "[lb_av]": "[lb_av]",
    "kg": "kg",
    "g": "g",
    "kpa": "kPa",
    "percent": "%",
    "steps": "{steps}",
    "step": "{steps}",
}

_BY_PAIR: dict[tuple[str, str], Callable[[float], float]] = {}
for _c in CONVERSIONS:
    _BY_PAIR[(_c.from_unit, _c.to_unit)] = _c.forward
    _BY_PAIR[(_c.to_unit, _c.from_unit)] = _c.backward


def normalize_unit(unit: str) -> str:
    """Return the UCUM code for a unit as a device spelled it (exact UCUM codes pass through)."""
    stripped = unit.strip()
    return UNIT_ALIASES.get(stripped.lower(), stripped)


def convert(value: float, unit: str, to_unit: str) -> float:
    """Convert `value` from `unit` (UCUM or a known alias) to `to_unit` (UCUM)."""
    ucum = normalize_unit(unit)
    if ucum == to_unit:
        return value
    forward = _BY_PAIR.get((ucum, to_unit))
    if forward is None:
        shown = unit if len(unit) <= 24 else unit[:24] + "…"
        raise UnitNotConvertible(f"unit {shown!r} cannot be converted to {to_unit!r}")
    return forward(value)
