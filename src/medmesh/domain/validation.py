"""Validation of raw readings: known measure, convertible unit, plausible value, sane clock."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from medmesh.domain.errors import InvalidReading, RejectReason, UnitNotConvertible
from medmesh.domain.reading import MeasuredValue, RawReading
from medmesh.domain.units import convert, normalize_unit
from medmesh.domain.vocabulary import (
    Measure,
    Quantity,
    laboratory_test,
    measure_by_code,
    measure_by_key,
)


def resolve_measure(name: str) -> Measure:
    """The measure a device means by a short key or a LOINC code."""
    measure = measure_by_key(name) or measure_by_code(name)
    if measure is None:
        raise InvalidReading(RejectReason.UNKNOWN_CODE, "measurement type or code is not known")
    return measure


def reading_measure(raw: RawReading) -> Measure:
    """The measure of a raw reading: the vocabulary's, or a laboratory test of any LOINC code."""
    if raw.laboratory_test and measure_by_code(raw.measure) is None:
        return laboratory_test(raw.measure, normalize_unit(raw.unit))
    return resolve_measure(raw.measure)


def _measured(quantity: Quantity, value: float, unit: str) -> MeasuredValue:
    # Plain ints and floats (nearly every reading) skip the general checks; the errors are
    # built only when raised (this runs once per quantity of every reading).
    kind = value.__class__
    if kind is float:
        number = value
    elif kind is int:
        try:
            number = float(value)
        except OverflowError:  # an int past float range
            number = math.nan
    else:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            number = math.nan
    if not math.isfinite(number):
        raise InvalidReading(
            RejectReason.MALFORMED, f"{quantity.key} value must be a finite number"
        )
    ucum = normalize_unit(unit)
    if ucum == quantity.unit:
        canonical = number
    else:
        if ucum not in quantity.alt_units:
            raise _not_convertible(quantity)
        try:
            canonical = convert(number, unit, quantity.unit)
        except UnitNotConvertible:
            raise _not_convertible(quantity) from None
    if not quantity.low <= canonical <= quantity.high:
        raise InvalidReading(
            RejectReason.IMPLAUSIBLE_VALUE,
            f"{quantity.key} is outside the plausible range "
            f"{quantity.low:g}–{quantity.high:g} {quantity.unit}",
        )
    if quantity.whole and not canonical.is_integer():
        raise InvalidReading(
            RejectReason.IMPLAUSIBLE_VALUE, f"{quantity.key} must be a whole number"
        )
    return MeasuredValue(quantity.code, round(canonical, 4), quantity.unit)


def _not_convertible(quantity: Quantity) -> InvalidReading:
    # The detail names the field and what is expected, never the unit sent: it goes back to the
    # device and into dead_letters.detail in clear (docs/readings.md).
    return InvalidReading(
        RejectReason.UNIT_NOT_CONVERTIBLE,
        f"field 'unit' is not a unit of {quantity.key} (expected {_expected(quantity)})",
    )


def _expected(quantity: Quantity) -> str:
    return " or ".join((quantity.unit, *quantity.alt_units))


def _check_panel(measure: Measure, values: tuple[MeasuredValue, ...]) -> None:
    """Consistency between the parts of a panel: a systolic pressure is above the diastolic."""
    if measure.key == "blood-pressure":
        systolic, diastolic = values
        if systolic.value <= diastolic.value:
            raise InvalidReading(
                RejectReason.IMPLAUSIBLE_VALUE,
                "blood-pressure systolic must be higher than diastolic",
            )


def validate_values(measure: Measure, raw: RawReading) -> tuple[MeasuredValue, ...]:
    """Convert and range-check the value(s) of `raw` against `measure`."""
    if measure.quantity is not None:
        if isinstance(raw.value, dict):
            raise InvalidReading(RejectReason.MALFORMED, f"{measure.key} takes a single number")
        return (_measured(measure.quantity, raw.value, raw.unit),)
    if not isinstance(raw.value, dict):
        keys = ", ".join(c.key for c in measure.components)
        raise InvalidReading(RejectReason.MALFORMED, f"{measure.key} takes an object with {keys}")
    unknown = set(raw.value) - {c.key for c in measure.components}
    missing = [c.key for c in measure.components if c.key not in raw.value]
    if unknown or missing:
        keys = ", ".join(c.key for c in measure.components)
        raise InvalidReading(RejectReason.MALFORMED, f"{measure.key} needs exactly: {keys}")
    values = tuple(_measured(c, raw.value[c.key], raw.unit) for c in measure.components)
    _check_panel(measure, values)
    return values


def check_effective_time(effective: datetime, now: datetime, max_skew: timedelta) -> None:
    """Refuse readings stamped further in the future than the allowed device clock skew."""
    if effective.tzinfo is None:
        raise InvalidReading(RejectReason.MALFORMED, "time must carry a UTC offset")
    if effective - now > max_skew:
        raise InvalidReading(
            RejectReason.FUTURE_TIMESTAMP,
            f"time is more than {int(max_skew.total_seconds())} s ahead of the server clock",
        )
