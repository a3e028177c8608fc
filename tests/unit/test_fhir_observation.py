"""Reading FHIR Observations from gateways into readings (ingest/fhir_observation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmesh.domain.errors import InvalidReading, InvalidRequest, RejectReason
from medmesh.ingest.fhir_observation import identifier_token, parse_observation
from medmesh.store.lab_results import LabFindings

LOINC, MDC, UCUM = "http://loinc.org", "urn:iso:std:iso:11073:10101", "http://unitsofmeasure.org"


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "effectiveDateTime": "2026-11-24T08:00:00Z",
        "valueQuantity": {"value": 72, "system": UCUM, "code": "/min"},
        **extra,
    }


def test_a_loinc_observation_becomes_a_reading_keyed_by_its_identifier() -> None:
    found = parse_observation(observation(identifier=[{"system": "urn:x", "value": "42"}]))
    reading = found.incoming.reading
    assert reading is not None and found.incoming.error is None
    assert (reading.measure, reading.value, reading.unit) == ("8867-4", 72, "/min")
    assert reading.message_id == "urn:x|42"


def test_an_mdc_coded_blood_pressure_panel_becomes_one_reading() -> None:
    bp = observation(
        code={"coding": [{"system": MDC, "code": "150020"}, {"system": LOINC, "code": "85354-9"}]},
        component=[
            {
                "code": {"coding": [{"system": MDC, "code": "150021"}]},
                "valueQuantity": {"value": 128, "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": {"value": 82, "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": MDC, "code": "150023"}]},  # mean: not stored
                "valueQuantity": {"value": 97, "system": UCUM, "code": "mm[Hg]"},
            },
        ],
    )
    del bp["valueQuantity"]
    reading = parse_observation(bp).incoming.reading
    assert reading is not None
    assert reading.value == {"systolic": 128, "diastolic": 82}


def test_without_an_identifier_the_same_resource_has_the_same_message_id() -> None:
    first = parse_observation(observation(id="a")).incoming.message_id
    second = parse_observation(observation(id="b", meta={"versionId": "2"})).incoming.message_id
    assert first == second and first is not None and first.startswith("fhir-sha256:")
    other = parse_observation(observation(effectiveDateTime="2026-11-24T08:01:00Z"))
    assert other.incoming.message_id != first


def test_problems_are_named_by_element() -> None:
    with pytest.raises(InvalidReading, match=r"Observation\.status"):
        parse_observation({"resourceType": "Observation", "code": {"text": "x"}})
    dateless = parse_observation(observation(effectiveDateTime="2026-11-24"))
    assert dateless.incoming.error is not None
    assert dateless.incoming.error.reason is RejectReason.MALFORMED
    cancelled = parse_observation(observation(status="cancelled")).incoming.error
    assert cancelled is not None and "status" in cancelled.message


def test_element_names_in_problems_are_printable_and_short() -> None:
    with pytest.raises(InvalidReading) as refused:
        parse_observation(observation(code={"\u0000": {"\f": 1}, "x" * 300: []}))
    assert refused.value.message.isprintable() and len(refused.value.message) <= 480


def test_only_identifier_searches_are_honoured_in_if_none_exist() -> None:
    assert identifier_token("identifier=urn:x|42") == "urn:x|42"
    for query in ("code=8867-4", "identifier=", "identifier=a&code=b"):
        with pytest.raises(InvalidRequest):
            identifier_token(query)


def test_reference_ranges_parse_where_they_can() -> None:
    assert (LabFindings("3.5-5.1").low, LabFindings("3.5-5.1").high) == (3.5, 5.1)
    assert (LabFindings("<1.3").low, LabFindings("<1.3").high) == (None, 1.3)
    assert (LabFindings(">60").low, LabFindings(">60").high) == (60, None)
    assert (LabFindings("negative").low, LabFindings("negative").high) == (None, None)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"resourceType": st.just("Observation")},
        optional={
            "status": st.sampled_from(["final", "amended", "cancelled"]) | _json,
            "code": _json,
            "valueQuantity": _json
            | st.fixed_dictionaries(
                {"value": st.integers() | st.floats(), "code": st.sampled_from(["/min", "kg"])}
            ),
            "component": _json,
            "effectiveDateTime": st.text(max_size=30) | _json,
            "identifier": _json,
        },
    )
)
def test_any_observation_is_read_or_refused_with_a_reason(resource: dict[str, Any]) -> None:
    try:
        found = parse_observation(resource)
    except (InvalidReading, InvalidRequest):
        return
    assert (found.incoming.reading is None) != (found.incoming.error is None)
