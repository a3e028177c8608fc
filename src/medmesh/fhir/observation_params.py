"""The Observation search's own parameters, parsed into the store's ObservationFilter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from medmesh.domain.errors import InvalidSearch, UnitNotConvertible
from medmesh.domain.units import convert
from medmesh.domain.vocabulary import (
    MEASURES,
    OTHER_LABORATORY_CODES,
    UCUM,
    codes_in_categories,
    is_laboratory_test,
)
from medmesh.fhir.resources import CATEGORY_SYSTEM
from medmesh.fhir.search import (
    _PREFIXES,
    date_conditions,
    parse_code_param,
    parse_reference,
    searched_patient,
)
from medmesh.store.observation_search import ObservationFilter
from medmesh.store.observations import StoredObservation

# `_sort` keys and the stored column each sorts by.
SORT_KEYS = {
    "date": "effective",
    "_lastUpdated": "received_at",
    "code": "code",
    "patient": "patient_id",
    "subject": "patient_id",
    "device": "device_id",
    "_id": "id",
}
_CATEGORIES = ("vital-signs", "laboratory", "activity")


def _tokens(value: str) -> list[str]:
    return [t for t in value.split(",") if t]


def _category_codes(value: str) -> tuple[str, ...]:
    wanted: list[str] = []
    for token in _tokens(value):
        system, sep, code = token.rpartition("|")
        if sep and system not in ("", CATEGORY_SYSTEM):
            raise InvalidSearch(f"category: only the system {CATEGORY_SYSTEM} is supported")
        wanted.append(code)
    return codes_in_categories([c for c in wanted if c in _CATEGORIES])


def _component_codes(value: str) -> tuple[str, ...]:
    """The panels having a component with one of these codes (LOINC)."""
    wanted: set[str] = set()
    for token in _tokens(value):
        system, sep, code = token.rpartition("|")
        if sep and system not in ("", "http://loinc.org"):
            raise InvalidSearch("component-code: only the LOINC system is supported")
        wanted.add(code)
    return tuple(m.code for m in MEASURES if any(c.code in wanted for c in m.components))


@dataclass(frozen=True, slots=True)
class ValueQuantity:
    """`value-quantity=[prefix]number[|system|code]` as a test on a decrypted reading."""

    prefix: str
    number: Decimal
    unit: str | None

    def _matches(self, value: float) -> bool:
        v = float(self.number)
        # eq and ne compare at the precision given: 100 is [99.5, 100.5), 100.0 [99.95, 100.05).
        exponent = self.number.as_tuple().exponent
        half = float(Decimal(5).scaleb(exponent - 1)) if isinstance(exponent, int) else 0.0
        match self.prefix:
            case "eq":
                return v - half <= value < v + half
            case "ne":
                return not v - half <= value < v + half
            case "gt" | "sa":
                return value > v
            case "lt" | "eb":
                return value < v
            case "ge":
                return value >= v
            case "le":
                return value <= v
        return abs(value - v) <= abs(v) / 10  # ap: within 10 %

    def __call__(self, observation: StoredObservation) -> bool:
        if len(observation.values) != 1 or observation.values[0].code != observation.code:
            return False  # a panel has no Observation.value (its components do)
        measured = observation.values[0]
        if self.unit is None:
            return self._matches(measured.value)
        try:
            # Convert the stored value into the asked unit, then compare at the asked precision.
            return self._matches(convert(measured.value, measured.unit, self.unit))
        except UnitNotConvertible:
            return False


def parse_value_quantity(value: str) -> ValueQuantity:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    number_text, _, rest = value.removeprefix(prefix if value[:2] == prefix else "").partition("|")
    system, _, code = rest.partition("|")
    try:
        number = Decimal(number_text)
    except InvalidOperation:
        raise InvalidSearch(
            "value-quantity must be [prefix]number[|system|code], e.g. ge100||/min"
        ) from None
    if not number.is_finite():
        raise InvalidSearch("value-quantity must be a finite number")
    if system not in ("", UCUM):
        raise InvalidSearch(f"value-quantity: only the UCUM system ({UCUM}) is supported")
    return ValueQuantity(prefix, number, code or None)


# Stored statuses: readings are final; a laboratory result may be preliminary or corrected.
STORED_STATUSES = frozenset({"final", "preliminary", "corrected"})


def _status(o: StoredObservation) -> str:
    return o.lab.status if o.lab is not None else "final"


def _may_find_lab_results(groups: list[tuple[str, ...]]) -> bool:
    return all(
        any(c == OTHER_LABORATORY_CODES or is_laboratory_test(c) for c in group) for group in groups
    )


def _all(
    tests: list[ValueQuantity], statuses: list[str]
) -> Callable[[StoredObservation], bool] | None:
    checks: list[Callable[[StoredObservation], bool]] = list(tests)
    wanted = set(statuses)
    if wanted and not wanted >= STORED_STATUSES:
        checks.append(lambda o: _status(o) in wanted)
    if not checks:
        return None
    return lambda o: all(check(o) for check in checks)


@dataclass(frozen=True, slots=True)
class ParsedObservationSearch:
    patient_id: str | None
    filter: ObservationFilter


def parse_observation_search(params: dict[str, list[str]]) -> ParsedObservationSearch:
    """The Observation search parameters (those in search_params.OBSERVATION) as a filter."""
    patient_id = searched_patient(params)
    groups: list[tuple[str, ...]] = [parse_code_param(v) for v in params.get("code", []) if v]
    groups += [_category_codes(v) for v in params.get("category", []) if v]
    groups += [_component_codes(v) for v in params.get("component-code", []) if v]
    groups += [
        tuple(dict.fromkeys((*parse_code_param(v), *_component_codes(v))))
        for v in params.get("combo-code", [])
        if v
    ]
    statuses = [t for v in params.get("status", []) for t in _tokens(v)]
    ids = tuple(t for v in params.get("_id", []) for t in _tokens(v))
    devices = tuple(
        parse_reference(t, "Device") for v in params.get("device", []) for t in _tokens(v)
    )
    effective = date_conditions(params, "date")
    received = date_conditions(params, "_lastUpdated")
    values = [parse_value_quantity(v) for v in params.get("value-quantity", [])]
    return ParsedObservationSearch(
        patient_id,
        ObservationFilter(
            patient_id=patient_id,
            ids=ids,
            device_ids=devices,
            code_groups=tuple(groups),
            effective=effective.bounds,
            effective_gaps=effective.gaps,
            received=received.bounds,
            received_gaps=received.gaps,
            nothing=bool(statuses) and not STORED_STATUSES & set(statuses),
            # Only laboratory results have another status than final: a search that cannot
            # find one keeps its SQL paging.
            keep=_all(values, statuses if _may_find_lab_results(groups) else []),
        ),
    )
