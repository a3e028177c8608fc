"""Parsing FHIR search parameters into store queries (date prefixes, tokens, paging, sort)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request

from medmesh.domain.errors import InvalidSearch
from medmesh.domain.vocabulary import LOINC, measure_by_code
from medmesh.store.observation_search import TimeGap
from medmesh.store.observations import TimeBound

DEFAULT_COUNT = 50
MAX_COUNT = 1000
PAGING_PARAMS = {"_count", "_offset", "_format"}
# Ignoring these would change which resources come back, or their order, unnoticed.
_NEVER_IGNORED = {"_include", "_revinclude", "_sort", "_typeFilter"}

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


def _prefixed(value: str, name: str) -> tuple[str, str]:
    """A prefixed search value (`ge2026-11-25`, `lt100`) as (prefix, rest); `eq` when none."""
    if value[:2] in _PREFIXES:
        return value[:2], value[2:]
    if value[:2].isalpha() and len(value) > 2 and value[2:3].isdigit():
        raise InvalidSearch(
            f"{name}: unknown prefix; use one of {', '.join(_PREFIXES)} (or none for eq)"
        )
    return "eq", value


@dataclass(frozen=True, slots=True)
class DateCondition:
    """A date parameter as bounds that must all hold and gaps the time must be outside."""

    bounds: tuple[TimeBound, ...] = ()
    gaps: tuple[TimeGap, ...] = ()


def parse_date_condition(
    value: str, name: str = "date", now: datetime | None = None
) -> DateCondition:
    """One date parameter (with its prefix) as conditions on an instant.

    The value stands for the range of its precision, [start, end). For an instant, `sa`
    (starts after) is `gt` and `eb` (ends before) is `lt`; `ap` widens the range by 10 % of
    its distance from now on each side (FHIR leaves the width to the server).
    """
    prefix, text = _prefixed(value, name)
    try:
        start, end = parse_date_range(text)
    except InvalidSearch as error:
        raise InvalidSearch(f"{name}: {error}".replace(f"{name}: date", name)) from None
    match prefix:
        case "eq":
            return DateCondition((TimeBound("ge", start), TimeBound("lt", end)))
        case "ne":
            return DateCondition(gaps=(TimeGap(start, end),))
        case "ge":
            return DateCondition((TimeBound("ge", start),))
        case "gt" | "sa":
            return DateCondition((TimeBound("ge", end),))
        case "le":
            return DateCondition((TimeBound("lt", end),))
        case "lt" | "eb":
            return DateCondition((TimeBound("lt", start),))
    moment = now or datetime.now(UTC)
    slack = abs(moment - start) / 10
    try:
        return DateCondition((TimeBound("ge", start - slack), TimeBound("lt", end + slack)))
    except OverflowError:
        raise InvalidSearch(f"{name}: the approximate range reaches past year 9999") from None


def parse_date_param(value: str) -> list[TimeBound]:
    """One `date` parameter (with an optional prefix) as bounds on the effective time; `ne`,
    which is not a bound, is refused here (use parse_date_condition)."""
    condition = parse_date_condition(value)
    if condition.gaps:
        raise InvalidSearch("date prefix 'ne' is not supported here")
    return list(condition.bounds)


def date_conditions(params: dict[str, list[str]], name: str) -> DateCondition:
    """Every value of a repeated date parameter, all of which must hold."""
    bounds: list[TimeBound] = []
    gaps: list[TimeGap] = []
    for value in params.get(name, []):
        condition = parse_date_condition(value, name)
        bounds.extend(condition.bounds)
        gaps.extend(condition.gaps)
    return DateCondition(tuple(bounds), tuple(gaps))


class SearchParams(dict[str, list[str]]):
    """A request's query parameters, each name with all its values in order, and how the
    client asked unknown ones to be handled (`Prefer: handling=strict` or lenient)."""

    def __init__(self, request: Request, strict: bool) -> None:
        super().__init__()
        self.request = request
        self.strict = strict


def _prefers_strict(request: Request) -> bool:
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            name, _, value = preference.strip().partition("=")
            if name.strip().lower() == "handling":
                return value.strip().strip('"').lower() == "strict"
    return False


def query_params(request: Request) -> SearchParams:
    """A request's query parameters, each name with all its values in order."""
    params = SearchParams(request, _prefers_strict(request))
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def ignored_params(request: Request) -> frozenset[str]:
    """The parameters this request's search ignored (lenient handling); links leave them out."""
    ignored: frozenset[str] = getattr(request.state, "fhir_ignored_params", frozenset())
    return ignored


def searched_patient(params: dict[str, list[str]]) -> str | None:
    """The patient a search names by `patient` or `subject` (not both), as an id; None: none."""
    patient, subject = single(params, "patient"), single(params, "subject")
    if patient and subject:
        raise InvalidSearch("give patient or subject, not both")
    reference = patient or subject
    return parse_reference(reference, "Patient") if reference else None


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


def reject_unknown(params: dict[str, list[str]], allowed: set[str]) -> None:
    """Unknown parameters: refused under `Prefer: handling=strict`, otherwise dropped from
    `params` and left out of the Bundle's links (FHIR's lenient handling). A known parameter
    with a modifier it does not support (`name:text`) is refused either way: ignoring the
    modifier would answer another question than the one asked."""
    known = allowed | PAGING_PARAMS
    unknown = sorted(set(params) - known)
    if not unknown:
        return
    modified = [name for name in unknown if name.partition(":")[0] in known]
    if modified:
        raise InvalidSearch(f"unsupported search modifier(s): {', '.join(modified)}")
    # Ignoring these would change which resources come back, or their order, unnoticed.
    shaping = [name for name in unknown if name in _NEVER_IGNORED]
    if shaping:
        raise InvalidSearch(f"{', '.join(shaping)}: not supported by this search")
    strict = params.strict if isinstance(params, SearchParams) else True
    if strict:
        raise InvalidSearch(f"unsupported search parameter(s): {', '.join(unknown)}")
    for name in unknown:
        del params[name]
    if isinstance(params, SearchParams):
        params.request.state.fhir_ignored_params = frozenset(unknown)


def single(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise InvalidSearch(f"{name} may be given once")
    if values and not values[0]:
        # An empty value is most likely a client's unset variable; searching as if the
        # parameter were absent would return far more than was asked for.
        raise InvalidSearch(f"{name} is empty")
    return values[0] if values else None
