"""The Patient search's own parameters. Names and birth dates are sealed per patient, so they
are matched on the decrypted candidates (docs/encryption.md); the identifier goes through its
blind index and the id and gender through plain columns before anything is decrypted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from medmesh.domain.errors import InvalidSearch
from medmesh.domain.registry import Patient
from medmesh.fhir.search import DateCondition, date_conditions, single
from medmesh.store.observations import TimeBound

SORT_KEYS = {
    "family": "family",
    "given": "given",
    "name": "name",
    "birthdate": "birthdate",
    "gender": "gender",
    "_id": "id",
}
_GENDERS = {"male", "female", "other", "unknown"}


@dataclass(frozen=True, slots=True)
class PatientSearch:
    ids: tuple[str, ...]
    identifier: tuple[str | None, str] | None
    tests: tuple[Callable[[Patient], bool], ...]

    def matches(self, patient: Patient) -> bool:
        return all(test(patient) for test in self.tests)


def _starts(prefix: str) -> Callable[[str], bool]:
    folded = prefix.casefold()
    return lambda text: text.casefold().startswith(folded)


def _holds(bound: TimeBound, moment: datetime) -> bool:
    match bound.op:
        case "ge":
            return moment >= bound.at
        case "gt":
            return moment > bound.at
        case "le":
            return moment <= bound.at
        case "lt":
            return moment < bound.at


def _born(condition: DateCondition) -> Callable[[Patient], bool]:
    def test(patient: Patient) -> bool:
        if patient.birth_date is None:
            return False
        # A birth date is a day: compared as that day's first instant in UTC, which is exact
        # for the day, month and year precision a birthdate search uses.
        moment = datetime(
            patient.birth_date.year, patient.birth_date.month, patient.birth_date.day, tzinfo=UTC
        )
        return all(_holds(b, moment) for b in condition.bounds) and not any(
            g.start <= moment < g.end for g in condition.gaps
        )

    return test


def parse_patient_search(params: dict[str, list[str]]) -> PatientSearch:
    identifier = single(params, "identifier")
    token: tuple[str | None, str] | None = None
    if identifier is not None:
        system, sep, value = identifier.rpartition("|")
        # `|value` means "with no system"; every medmesh identifier has one, so it matches
        # nothing (the empty system never equals a stored one).
        token = (system if sep else None, value)
    tests: list[Callable[[Patient], bool]] = []
    for value in params.get("name", []):
        starts = _starts(value)
        tests.append(lambda p, s=starts: s(p.family) or s(p.given))  # type: ignore[misc]
    for value in params.get("family", []):
        tests.append(lambda p, s=_starts(value): s(p.family))  # type: ignore[misc]
    for value in params.get("given", []):
        tests.append(lambda p, s=_starts(value): s(p.given))  # type: ignore[misc]
    for value in params.get("gender", []):
        genders = {g.rpartition("|")[2] for g in value.split(",") if g}
        if not genders <= _GENDERS:
            raise InvalidSearch("gender must be male, female, other or unknown")
        tests.append(lambda p, g=frozenset(genders): p.gender in g)  # type: ignore[misc]
    if params.get("birthdate"):
        tests.append(_born(date_conditions(params, "birthdate")))
    ids = tuple(t for v in params.get("_id", []) for t in v.split(",") if t)
    return PatientSearch(ids, token, tuple(tests))


def sort_patients(found: list[Patient], sort: tuple[tuple[str, bool], ...]) -> list[Patient]:
    """Sorted by the `_sort` keys (family, given, id by default). Patients without a birth
    date or gender sort after those with one, either way round."""
    ordered = sorted(found, key=lambda p: (p.family.casefold(), p.given.casefold(), p.id))
    for key, descending in reversed(sort):
        if key == "birthdate":
            known = [p for p in ordered if p.birth_date is not None]
            known.sort(key=lambda p: p.birth_date, reverse=descending)  # type: ignore[arg-type,return-value]
            ordered = known + [p for p in ordered if p.birth_date is None]
        elif key == "gender":
            known = [p for p in ordered if p.gender is not None]
            known.sort(key=lambda p: str(p.gender), reverse=descending)
            ordered = known + [p for p in ordered if p.gender is None]
        else:
            field: Callable[[Patient], tuple[str, ...]] = {
                "family": lambda p: (p.family.casefold(),),
                "given": lambda p: (p.given.casefold(),),
                "name": lambda p: (p.family.casefold(), p.given.casefold()),
                "id": lambda p: (p.id,),
            }[key]
            ordered.sort(key=field, reverse=descending)
    return ordered
