"""FHIR search parameters: date precision and prefixes, code tokens, references, paging."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain.errors import InvalidSearch
from medmesh.domain.timestamps import TimestampError, parse_rfc3339
from medmesh.fhir.observation_params import parse_observation_search, parse_value_quantity
from medmesh.fhir.search import (
    DEFAULT_COUNT,
    MAX_COUNT,
    parse_code_param,
    parse_date_condition,
    parse_date_param,
    parse_date_range,
    parse_paging,
    parse_reference,
    reject_unknown,
)
from medmesh.fhir.search_results import Summary, parse_controls
from medmesh.store.observation_search import TimeGap
from medmesh.store.observations import TimeBound


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --- parse_date_range ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026", utc(2026, 1, 1), utc(2027, 1, 1)),
        ("2026-11", utc(2026, 11, 1), utc(2026, 12, 1)),
        ("2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
        ("2028-02", utc(2028, 2, 1), utc(2028, 3, 1)),
        ("2026-11-25", utc(2026, 11, 25), utc(2026, 11, 26)),
        ("2026-12-31", utc(2026, 12, 31), utc(2027, 1, 1)),
        ("2028-02-29", utc(2028, 2, 29), utc(2028, 3, 1)),
        ("2026-11-25T08:00Z", utc(2026, 11, 25, 8, 0), utc(2026, 11, 25, 8, 1)),
        ("2026-11-25T08:59Z", utc(2026, 11, 25, 8, 59), utc(2026, 11, 25, 9, 0)),
        ("2026-11-25T08:00:30Z", utc(2026, 11, 25, 8, 0, 30), utc(2026, 11, 25, 8, 0, 31)),
        (
            "2026-11-25T08:00:30.5Z",
            utc(2026, 11, 25, 8, 0, 30, 500000),
            utc(2026, 11, 25, 8, 0, 30, 600000),
        ),
        (
            "2026-11-25T08:00:30.123Z",
            utc(2026, 11, 25, 8, 0, 30, 123000),
            utc(2026, 11, 25, 8, 0, 30, 124000),
        ),
        (
            "2026-11-25T08:00:30.123456Z",
            utc(2026, 11, 25, 8, 0, 30, 123456),
            utc(2026, 11, 25, 8, 0, 30, 123457),
        ),
    ],
)
def test_a_date_denotes_the_whole_range_of_its_precision(
    text: str, start: datetime, end: datetime
) -> None:
    assert parse_date_range(text) == (start, end)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("2026-11-25T09:00:00+01:00", utc(2026, 11, 25, 8, 0)),
        ("2026-11-25T03:00:00-05:00", utc(2026, 11, 25, 8, 0)),
        ("2026-11-25T00:30:00+05:30", utc(2026, 11, 24, 19, 0)),
        ("2027-01-01T00:00:00+01:00", utc(2026, 12, 31, 23, 0)),
        ("2026-11-25T08:00:00", utc(2026, 11, 25, 8, 0)),
    ],
)
def test_times_with_an_offset_are_converted_to_utc_and_without_are_read_as_utc(
    text: str, start: datetime
) -> None:
    got_start, got_end = parse_date_range(text)
    assert got_start == start
    assert got_start.utcoffset() == timedelta(0)
    assert got_end - got_start == timedelta(seconds=1)


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30",
        "2027-02-29",
        "2026-13",
        "2026-00",
        "2026-11-31",
        "2026-11-25T24:00Z",
        "2026-11-25T08:60Z",
        "2026-11-25T08",
        "2026-1-5",
        "26-11-25",
        "2026-11-25Z",
        "yesterday",
        "",
        "2026-11-25T08:00:00+1:00",
    ],
)
def test_an_invalid_date_is_refused(text: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_date_range(text)


@pytest.mark.parametrize("text", ["9999-12-31", "9999-12-31T23:59Z", "9999-12-31T23:59:59Z"])
def test_the_last_representable_day_is_searchable_or_refused_cleanly(text: str) -> None:
    try:
        start, end = parse_date_range(text)
    except InvalidSearch:
        return
    assert start < end


def test_a_time_before_the_first_representable_utc_instant_is_refused_cleanly() -> None:
    with pytest.raises(InvalidSearch):
        parse_date_range("0001-01-01T00:00+01:00")


@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_a_second_precision_time_is_the_second_it_names(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    start, end = parse_date_range(moment.isoformat())
    assert start == moment
    assert start.tzinfo == UTC
    assert end - start == timedelta(seconds=1)


@given(day=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1)))
def test_day_month_and_year_ranges_contain_the_day_and_nest(day: date) -> None:
    midnight = datetime.combine(day, datetime.min.time(), UTC)
    day_range = parse_date_range(day.isoformat())
    month_range = parse_date_range(day.isoformat()[:7])
    year_range = parse_date_range(day.isoformat()[:4])
    assert day_range == (midnight, midnight + timedelta(days=1))
    assert year_range[0] <= month_range[0] <= day_range[0]
    assert day_range[1] <= month_range[1] <= year_range[1]
    assert month_range[0].day == 1 and (month_range[1] - timedelta(days=1)).month == day.month


# --- parse_date_param ---------------------------------------------------------------------

DAY = "2026-11-25"
START, END = utc(2026, 11, 25), utc(2026, 11, 26)


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        (DAY, [TimeBound("ge", START), TimeBound("lt", END)]),
        (f"eq{DAY}", [TimeBound("ge", START), TimeBound("lt", END)]),
        (f"ge{DAY}", [TimeBound("ge", START)]),
        (f"gt{DAY}", [TimeBound("ge", END)]),
        (f"le{DAY}", [TimeBound("lt", END)]),
        (f"lt{DAY}", [TimeBound("lt", START)]),
    ],
)
def test_date_prefixes_compare_against_the_range_of_the_value(
    value: str, bounds: list[TimeBound]
) -> None:
    assert parse_date_param(value) == bounds


@pytest.mark.parametrize(
    ("value", "bounds", "gaps"),
    [
        (f"sa{DAY}", (TimeBound("ge", END),), ()),
        (f"eb{DAY}", (TimeBound("lt", START),), ()),
        (f"ne{DAY}", (), (TimeGap(START, END),)),
    ],
)
def test_the_other_date_prefixes_are_conditions_on_an_instant(
    value: str, bounds: tuple[TimeBound, ...], gaps: tuple[TimeGap, ...]
) -> None:
    condition = parse_date_condition(value)
    assert (condition.bounds, condition.gaps) == (bounds, gaps)


def test_approximately_widens_the_range_by_a_tenth_of_its_distance_from_now() -> None:
    now = START + timedelta(days=10)
    condition = parse_date_condition(f"ap{DAY}", now=now)
    assert condition.bounds == (
        TimeBound("ge", START - timedelta(days=1)),
        TimeBound("lt", END + timedelta(days=1)),
    )


def test_ne_is_refused_where_only_bounds_are_understood() -> None:
    with pytest.raises(InvalidSearch) as caught:
        parse_date_param(f"ne{DAY}")
    assert "ne" in str(caught.value)


@pytest.mark.parametrize("value", ["xx2026-11-25", "GE2026-11-25", "ge", "ge 2026-11-25"])
def test_an_unknown_prefix_or_missing_date_is_refused(value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_date_param(value)


# --- parse_code_param ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "codes"),
    [
        ("http://loinc.org|8867-4", ("8867-4",)),
        ("|8867-4", ("8867-4",)),
        ("8867-4", ("8867-4",)),
        ("http://loinc.org|59408-5", ("2708-6",)),
        ("59408-5", ("2708-6",)),
        ("8867-4,9279-1", ("8867-4", "9279-1")),
        ("http://loinc.org|8867-4,|85354-9", ("8867-4", "85354-9")),
        ("2708-6,59408-5", ("2708-6",)),
        ("99999-9", ("99999-9",)),
    ],
)
def test_code_tokens_become_stored_loinc_codes(value: str, codes: tuple[str, ...]) -> None:
    assert parse_code_param(value) == codes


@pytest.mark.parametrize(
    "value",
    [
        "http://snomed.info/sct|364075005",
        "8867-4,http://snomed.info/sct|364075005",
        "loinc|8867-4",
        "http://loinc.org/|8867-4",
    ],
)
def test_a_code_in_another_system_is_refused(value: str) -> None:
    with pytest.raises(InvalidSearch) as caught:
        parse_code_param(value)
    assert "loinc" in str(caught.value).lower()


# --- parse_reference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["Patient/p-123", "p-123", "https://ehr.example.org/fhir/Patient/p-123", "Patient/p-123/"],
)
def test_a_patient_reference_gives_the_patient_id(value: str) -> None:
    assert parse_reference(value, "Patient") == "p-123"


@pytest.mark.parametrize("value", ["Device/p-123", "https://x/fhir/Device/p-123", "/", "//"])
def test_a_reference_to_another_type_or_nothing_is_refused(value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_reference(value, "Patient")


def test_a_reference_with_an_empty_id_is_refused() -> None:
    with pytest.raises(InvalidSearch):
        parse_reference("Patient/", "Patient")


# --- the Observation search and the result parameters --------------------------------------


def test_an_empty_query_gives_the_defaults() -> None:
    parsed = parse_observation_search({})
    assert parsed.patient_id is None
    assert (parsed.filter.code_groups, parsed.filter.effective, parsed.filter.keep) == (
        (),
        (),
        None,
    )
    controls = parse_controls({}, "Observation", {"date": "effective"})
    assert (controls.paging.count, controls.paging.offset, controls.sort) == (DEFAULT_COUNT, 0, ())
    assert controls.summary is Summary.FALSE and controls.total


def test_a_full_query_is_parsed_into_every_part() -> None:
    params = {
        "patient": ["Patient/p-1"],
        "code": ["http://loinc.org|8867-4,59408-5"],
        "category": ["vital-signs"],
        "date": ["ge2026-11-01", "lt2026-12"],
        "_sort": ["-date,code"],
        "_count": ["20"],
        "_offset": ["40"],
    }
    parsed = parse_observation_search(params)
    assert parsed.patient_id == "p-1"
    assert parsed.filter.code_groups[0] == ("8867-4", "2708-6")
    assert "85354-9" in parsed.filter.code_groups[1]
    assert parsed.filter.effective == (
        TimeBound("ge", utc(2026, 11, 1)),
        TimeBound("lt", utc(2026, 12, 1)),
    )
    controls = parse_controls(params, "Observation", {"date": "effective", "code": "code"})
    assert controls.sort == (("effective", True), ("code", False))
    assert (controls.paging.count, controls.paging.offset) == (20, 40)


def test_subject_works_like_patient() -> None:
    assert parse_observation_search({"subject": ["Patient/p-2"]}).patient_id == "p-2"


def test_unknown_parameters_are_refused_by_name_when_strict() -> None:
    with pytest.raises(InvalidSearch) as caught:
        reject_unknown({"colour": ["x"]}, {"code"})  # a plain dict: strict
    assert "colour" in str(caught.value)


@pytest.mark.parametrize("sort", ["value", "-effective", "DATE", ""])
def test_sort_by_an_unknown_key_is_refused(sort: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_controls(
            {"_sort": [f"date,{sort}" if sort else "date,"]}, "Observation", {"date": "e"}
        )


@pytest.mark.parametrize(("count", "limit"), [("0", 0), ("1", 1), ("1000", 1000), ("5000", 1000)])
def test_count_is_capped_at_the_maximum_page(count: str, limit: int) -> None:
    assert parse_paging({"_count": [count]}).count == limit
    assert MAX_COUNT == 1000


@pytest.mark.parametrize("count", ["ten", "-1", "1.5", "1e3", "", " 5"])
def test_a_count_that_is_not_a_non_negative_integer_is_refused(count: str) -> None:
    with pytest.raises(InvalidSearch) as caught:
        parse_paging({"_count": [count]})
    assert "_count" in str(caught.value)


@pytest.mark.parametrize("name", ["_sort", "patient", "_summary", "_total"])
def test_a_single_valued_parameter_given_twice_is_refused(name: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_observation_search({name: ["1", "2"]})
        parse_controls({name: ["1", "2"]}, "Observation", {})


@pytest.mark.parametrize(
    ("value", "matches", "misses"),
    [
        ("100", [99.5, 100.4], [99.4, 100.5]),
        ("100.0", [99.95, 100.04], [99.9, 100.05]),
        ("gt100", [100.1], [100]),
        ("le100", [100, 3], [100.01]),
        ("ap100", [90, 110], [89, 111]),
        ("ne100", [98, 101], [100.2]),
    ],
)
def test_value_quantity_compares_at_the_precision_given(
    value: str, matches: list[float], misses: list[float]
) -> None:
    test = parse_value_quantity(value)
    assert all(test._matches(v) for v in matches)
    assert not any(test._matches(v) for v in misses)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1000, max_value=1000)
)
def test_value_quantity_eq_always_matches_its_own_number(number: object) -> None:
    assert parse_value_quantity(str(number))._matches(float(str(number)))


def test_a_count_of_non_ascii_digits_is_refused_cleanly() -> None:
    with pytest.raises(InvalidSearch):
        parse_paging({"_count": ["²"]})


def test_dates_in_other_scripts_digits_are_refused_with_a_clear_reason() -> None:
    for text in ("٢٠٢١", "2021-0١", "2021-01-01T1٠:00:00Z", "２０２１"):
        with pytest.raises(InvalidSearch, match="digits 0-9"):
            parse_date_range(text)
    with pytest.raises(TimestampError) as refused:
        parse_rfc3339("٢٠٢١-01-01T00:00:00Z")
    assert refused.value.problem == "format"
