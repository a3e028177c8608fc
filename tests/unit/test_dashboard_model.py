"""The panel's order and how the latest vitals read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medmesh.domain.alerts import Severity
from medmesh.domain.registry import Patient
from medmesh.store.vitals import LatestValue
from medmesh.web.panel import urgency_order
from medmesh.web.vitals import BLOOD_PRESSURE, GLUCOSE, TEMPERATURE, shown

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def patient(pid: str, family: str, given: str = "A") -> Patient:
    return Patient(pid, "urn:test", pid, family, given)


def test_patients_are_ordered_by_severity_then_alert_count_then_name() -> None:
    patients = [
        patient("1", "Adams"),
        patient("2", "Baker"),
        patient("3", "carter"),
        patient("4", "Davis"),
        patient("5", "Evans"),
    ]
    counts = {
        "2": (1, Severity.WARNING),
        "3": (1, Severity.CRITICAL),
        "4": (3, Severity.WARNING),
        "5": (1, Severity.CRITICAL),
    }
    assert [p.family for p in urgency_order(patients, counts)] == [
        "carter",  # critical, 1 alert, C before E regardless of case
        "Evans",
        "Davis",  # warning, 3 alerts
        "Baker",  # warning, 1 alert
        "Adams",  # no alerts
    ]


def test_blood_pressure_reads_systolic_over_diastolic() -> None:
    latest = {("p", "85354-9"): LatestValue("p", "85354-9", NOW, {"8480-6": 128.0, "8462-4": 84.4})}
    value = shown(BLOOD_PRESSURE, "p", latest, NOW)
    assert value is not None and value.text == "128/84" and not value.stale


def test_glucose_shows_whichever_source_was_read_last() -> None:
    earlier = NOW - timedelta(minutes=30)
    latest = {
        ("p", "41653-7"): LatestValue("p", "41653-7", earlier, {"41653-7": 180.0}),
        ("p", "99504-3"): LatestValue("p", "99504-3", NOW, {"99504-3": 95.0}),
    }
    value = shown(GLUCOSE, "p", latest, NOW)
    assert value is not None and value.text == "95"


def test_an_old_value_is_marked_stale() -> None:
    latest = {
        ("p", "8310-5"): LatestValue("p", "8310-5", NOW - timedelta(hours=5), {"8310-5": 37.25})
    }
    value = shown(TEMPERATURE, "p", latest, NOW)
    assert value is not None and value.text == "37.2" and value.stale
    assert shown(TEMPERATURE, "other", latest, NOW) is None
