"""Subscription criteria, endpoint rules, signatures, retry timing, event matching and the
notification Bundle, without a database or network."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given
from hypothesis import strategies as st

from medmesh.domain.reading import MeasuredValue
from medmesh.domain.subscription import (
    Criteria,
    InvalidSubscription,
    check_endpoint,
    parse_criteria,
)
from medmesh.events.model import ALERT, DEVICE, READINGS, Event
from medmesh.fhir import resources
from medmesh.fhir.notification import Change, flag_from_alert, notification_bundle
from medmesh.store.observations import StoredObservation
from medmesh.webhooks.dispatcher import matches
from medmesh.webhooks.policy import WebhookPolicy
from medmesh.webhooks.signing import signature, verify

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Observation?patient=p1", Criteria("Observation", "p1")),
        ("Observation?patient=Patient/p1", Criteria("Observation", "p1")),
        ("Observation?code=8867-4&patient=p1", Criteria("Observation", "p1", ("8867-4",))),
        (
            "Observation?patient=p1&code=http://loinc.org|59408-5,|8867-4",
            Criteria("Observation", "p1", ("2708-6", "8867-4")),
        ),
        (
            "Observation?patient=p1&code=http%3A%2F%2Floinc.org%7C8867-4",
            Criteria("Observation", "p1", ("8867-4",)),
        ),
        ("Flag", Criteria("Flag", None)),
        ("Flag?", Criteria("Flag", None)),
        ("Flag?patient=p1", Criteria("Flag", "p1")),
    ],
)
def test_supported_criteria_are_parsed(text: str, expected: Criteria) -> None:
    assert parse_criteria(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Observation",
        "Observation?",
        "Observation?patient=",
        "Observation?patient=Device/1",
        "Observation?subject=p1",
        "Observation?patient=p1&patient=p2",
        "Observation?patient=p1&code=http://snomed.info/sct|1",
        "Observation?patient=p1&code=0000-0",
        "Observation?patient",
        "Flag?code=x",
        "Patient?name=x",
        "http://server/fhir/Observation?patient=p1",
    ],
)
def test_unsupported_criteria_are_refused(text: str) -> None:
    with pytest.raises(InvalidSubscription):
        parse_criteria(text)


@given(st.text(max_size=80))
def test_any_criteria_text_is_parsed_or_refused_with_a_reason(text: str) -> None:
    try:
        parse_criteria(text)
    except InvalidSubscription as exc:
        assert str(exc)


@pytest.mark.parametrize(
    "url",
    [
        "https://receiver.example.org/hook",
        "https://10.0.0.8:8443/hook?tenant=a",
        "http://127.0.0.1:9000/hook",
        "http://127.1.2.3/hook",
        "http://localhost:8080/",
        "http://[::1]/",
    ],
)
def test_https_and_loopback_http_endpoints_are_accepted(url: str) -> None:
    assert check_endpoint(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.example.org/hook",
        "http://10.0.0.8/hook",
        "http://127.0.0.1.example.org/",
        "https://user:secret@receiver.example.org/",
        "https:///path-only",
        "https://receiver.example.org:99999/",
        "ws://127.0.0.1/",
        "https://x.org/" + "a" * 2000,
    ],
)
def test_other_endpoints_are_refused(url: str) -> None:
    with pytest.raises(InvalidSubscription):
        check_endpoint(url)


def test_a_signature_is_an_hmac_of_the_timestamp_and_the_body() -> None:
    body = b'{"resourceType":"Bundle"}'
    expected = hmac.new(b"key", b"1764057600." + body, hashlib.sha256).hexdigest()
    assert signature("key", 1764057600, body) == f"sha256={expected}"


def test_a_receiver_accepts_only_a_fresh_untouched_body_signed_with_its_secret() -> None:
    body, sent = b"{}", 1764057600
    header = signature("key", sent, body)
    assert verify("key", str(sent), body, header, now=sent + 10)
    assert not verify("key", str(sent), b"{ }", header, now=sent + 10)
    assert not verify("other", str(sent), body, header, now=sent + 10)
    assert not verify("key", str(sent + 1), body, header, now=sent + 10)
    assert not verify("key", str(sent), body, header, now=sent + 301)  # a replay
    assert not verify("key", "-1", body, header, now=sent)


def test_retries_back_off_with_jitter_and_the_last_delay_repeats() -> None:
    policy = WebhookPolicy()
    assert [policy.retry_delay(n, 0.5).total_seconds() for n in range(1, 8)] == [
        5,
        30,
        120,
        600,
        3600,
        3600,
        3600,
    ]
    assert policy.retry_delay(1, 0.0).total_seconds() == pytest.approx(4.0)
    assert policy.retry_delay(1, 0.999999).total_seconds() == pytest.approx(6.0)


def _readings(patient: str, codes: list[str] | None) -> Event:
    data = {"count": 1, "observations": []} | ({"codes": codes} if codes is not None else {})
    return Event(READINGS, patient, data)


def test_events_match_the_criteria_they_were_asked_for() -> None:
    heart_rate = Criteria("Observation", "p1", ("8867-4",))
    assert matches(heart_rate, _readings("p1", ["8867-4", "2708-6"]))
    assert not matches(heart_rate, _readings("p1", ["2708-6"]))
    assert not matches(heart_rate, _readings("p2", ["8867-4"]))
    assert matches(heart_rate, _readings("p1", None))  # too large to carry codes: may match
    assert matches(Criteria("Observation", "p1"), _readings("p1", ["2708-6"]))
    assert not matches(heart_rate, Event(ALERT, "p1", {}))
    assert matches(Criteria("Flag", None), Event(ALERT, "p9", {}))
    assert matches(Criteria("Flag", "p1"), Event(ALERT, "p1", {}))
    assert not matches(Criteria("Flag", "p1"), Event(ALERT, "p2", {}))
    assert not matches(Criteria("Flag", None), _readings("p1", ["8867-4"]))
    assert not matches(Criteria("Flag", None), Event(DEVICE, None, {}))


def test_a_notification_is_a_valid_r4_history_bundle() -> None:
    observation = StoredObservation(
        id=str(uuid.uuid4()),
        patient_id="p1",
        device_id="d1",
        message_id="m1",
        code="8867-4",
        effective=NOW,
        values=(MeasuredValue("8867-4", 72.0, "/min"),),
        received_at=NOW,
    )
    alert = {"id": str(uuid.uuid4()), "patient_id": "p1", "rule": "hr-high"}
    flag = flag_from_alert({**alert, "severity": "warning", "status": "resolved"})
    assert flag is not None
    assert flag["status"] == "inactive"
    assert flag_from_alert(alert) is None  # no severity or status: no Flag
    changes = [Change(resources.observation(observation), "POST"), Change(flag, "PUT")]
    bundle = notification_bundle("s1", 7, NOW, changes, NOW)
    Bundle.model_validate(orjson.loads(orjson.dumps(bundle)))
    status, posted, put = bundle["entry"]
    assert status["request"] == {"method": "GET", "url": "Subscription/s1/$status"}
    event = next(p for p in status["resource"]["parameter"] if p["name"] == "notification-event")
    assert {"name": "event-number", "valueString": "7"} in event["part"]
    assert posted["fullUrl"] == f"urn:uuid:{observation.id}"
    assert posted["response"]["location"] == f"Observation/{observation.id}"
    assert put["request"] == {"method": "PUT", "url": f"Flag/{alert['id']}"}
