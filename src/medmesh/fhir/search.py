"""Parsing FHIR search parameters into store queries (date prefixes, tokens, paging, sort)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request

from medmesh.domain.errors import InvalidSearch
from medmesh.domain.vocabulary import LOINC, measure_by_code
from medmesh.fhir import search_params
from medmesh.fhir.search_params import names
from medmesh.store.observations import ObservationQuery, TimeBound

DEFAULT_COUNT = 50
MAX_COUNT = 1000
PAGING_PARAMS = {"_count", "_offset", "_format"}

# re.ASCII: without it \d also matches other scripts' digits (٢٠٢١), which int() reads.
_DATE = re.compile(
    r"(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d{1,9})?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id syntax
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class Paging:
    count: int
    offset: int


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


def parse_date_range(text: str) -> tuple[datetime, datetime]:
    """The half-open UTC range [start, end) a FHIR date/dateTime value denotes at its precision.

    A value without a time zone is read as UTC (documented in docs/fhir-api.md).
    """
    match = _DATE.fullmatch(text)
    if match is None:
        raise InvalidSearch(
            "date must be a FHIR date or dateTime in digits 0-9, e.g. 2026-11-25T08:00:00Z"
        )
    try:
        return _range(match.groupdict(), text)
    except (ValueError, OverflowError):
        # Not a calendar date, or a range reaching past year 9999 / before year 1.
        raise InvalidSearch("date is not a valid calendar date or time in range") from None


def _range(g: dict[str, str | None], text: str) -> tuple[datetime, datetime]:
    year = int(str(g["y"]))
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        return start, start.replace(year=year + 1)
    if g["d"] is None:
        start = datetime(year, int(g["m"]), 1, tzinfo=UTC)
        return start, _add_months(start, 1)
    if g["H"] is None:
        day = date(year, int(g["m"]), int(str(g["d"])))
        start = datetime.combine(day, datetime.min.time(), UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if g["S"] is None:
        step = timedelta(minutes=1)
    elif g["f"] is None:
        step = timedelta(seconds=1)
    else:
        step = timedelta(microseconds=max(1, 10 ** (6 - min(len(g["f"]) - 1, 6))))
    return moment, moment + step


def parse_date_param(value: str) -> list[TimeBound]:
    """One `date` parameter (with an optional prefix) as bounds on the effective time."""
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    start, end = parse_date_range(text)
    match prefix:
        case "eq":
            return [TimeBound("ge", start), TimeBound("lt", end)]
        case "ge":
            return [TimeBound("ge", start)]
        case "gt":
            return [TimeBound("ge", end)]
        case "le":
            return [TimeBound("lt", end)]
        case "lt":
            return [TimeBound("lt", start)]
    raise InvalidSearch(f"date prefix {prefix!r} is not supported; use eq, ge, gt, le or lt")


def query_params(request: Request) -> dict[str, list[str]]:
    """A request's query parameters, each name with all its values in order."""
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def parse_reference(value: str, resource_type: str) -> str:
    """`Patient/123`, `123` or a full URL ending in `Patient/123` → `123`."""
    trailing_slash = value.endswith("/")
    parts = (value[:-1] if trailing_slash else value).split("/")
    if len(parts) >= 2 and parts[-2] != resource_type:
        raise InvalidSearch(f"reference must point to a {resource_type}")
    ident = parts[-1]
    if not ident or (len(parts) == 1 and trailing_slash):  # "", "Patient/" or "123/"
        raise InvalidSearch(f"reference to a {resource_type} is empty")
    if not _FHIR_ID.fullmatch(ident):
        raise InvalidSearch(f"reference to a {resource_type} must end in a FHIR id")
    return ident


def parse_code_param(value: str) -> tuple[str, ...]:
    """A token list (`system|code`, `code` or `|code`, comma-separated) as stored LOINC codes.

    Alternative codes of a measure (59408-5 for SpO2) find the measure's stored primary code.
    """
    codes: list[str] = []
    for token in value.split(","):
        system, sep, code = token.rpartition("|")
        if sep and system not in ("", LOINC):
            raise InvalidSearch("code: only the LOINC system (http://loinc.org) is supported")
        measure = measure_by_code(code)
        codes.append(measure.code if measure is not None else code)
    return tuple(dict.fromkeys(codes))


def parse_paging(params: dict[str, list[str]]) -> Paging:
    def number(name: str, default: int, maximum: int) -> int:
        values = params.get(name, [])
        if not values:
            return default
        if len(values) > 1 or not (values[0].isascii() and values[0].isdigit()):
            raise InvalidSearch(f"{name} must be a single non-negative integer")
        return min(int(values[0]), maximum)

    return Paging(number("_count", DEFAULT_COUNT, MAX_COUNT), number("_offset", 0, 10**9))


def reject_unknown(params: Iterable[str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed - PAGING_PARAMS)
    if unknown:
        raise InvalidSearch(f"unsupported search parameter(s): {', '.join(unknown)}")


def single(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise InvalidSearch(f"{name} may be given once")
    if values and not values[0]:
        # An empty value is most likely a client's unset variable; searching as if the
        # parameter were absent would return far more than was asked for.
        raise InvalidSearch(f"{name} is empty")
    return values[0] if values else None


def observation_query(params: dict[str, list[str]]) -> ObservationQuery:
    reject_unknown(params, names(search_params.OBSERVATION))
    paging = parse_paging(params)
    patient, subject = single(params, "patient"), single(params, "subject")
    if patient and subject:
        raise InvalidSearch("give patient or subject, not both")
    patient = patient or subject
    code = single(params, "code")
    bounds = [b for value in params.get("date", []) for b in parse_date_param(value)]
    sort = single(params, "_sort") or "date"
    if sort not in ("date", "-date"):
        raise InvalidSearch("_sort supports date and -date")
    return ObservationQuery(
        patient_id=parse_reference(patient, "Patient") if patient else None,
        codes=parse_code_param(code) if code else (),
        bounds=tuple(bounds),
        newest_first=sort == "-date",
        limit=paging.count,
        offset=paging.offset,
    )
