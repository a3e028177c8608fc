"""The alert lifecycle, severities, care-plan thresholds and schedule arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from medmesh.domain.alerts import Alert, AlertStatus, Severity, alert_json
from medmesh.domain.care_plans import Schedule
from medmesh.domain.errors import Conflict
from medmesh.rules.defaults import DEFAULT_THRESHOLDS
from medmesh.rules.schedule import last_complete_day, stale_after

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ALERT = Alert(
    id="a1",
    patient_id="p",
    rule="spo2-low",
    dedupe_key="spo2-low:p",
    severity=Severity.URGENT,
    status=AlertStatus.OPEN,
    title="Low oxygen saturation",
    detail="SpO2 below 90 %",
    device_id="d",
    observation_id="o",
    opened_at=T0,
    last_triggered_at=T0,
    trigger_count=1,
)


def test_severities_sort_by_rank() -> None:
    assert sorted(Severity, key=lambda s: s.rank) == [
        Severity.INFO,
        Severity.WARNING,
        Severity.URGENT,
        Severity.CRITICAL,
    ]


def test_an_open_alert_is_acknowledged_then_resolved_with_who_and_when() -> None:
    acknowledged = ALERT.acknowledge("dr a", T0 + timedelta(minutes=1))
    resolved = acknowledged.resolve("dr b", T0 + timedelta(minutes=2), "called the patient")
    assert (acknowledged.status, acknowledged.acknowledged_by) == (AlertStatus.ACKNOWLEDGED, "dr a")
    assert resolved.status is AlertStatus.RESOLVED
    assert (resolved.resolved_by, resolved.resolution) == ("dr b", "called the patient")
    assert resolved.acknowledged_by == "dr a"


def test_only_an_open_alert_can_be_acknowledged() -> None:
    acknowledged = ALERT.acknowledge("dr a", T0)
    with pytest.raises(Conflict):
        acknowledged.acknowledge("dr b", T0)
    with pytest.raises(Conflict):
        ALERT.resolve("dr a", T0, "done").acknowledge("dr a", T0)


def test_a_resolved_alert_cannot_be_resolved_again() -> None:
    with pytest.raises(Conflict):
        ALERT.resolve("dr a", T0, "done").resolve("dr a", T0, "again")


def test_alert_json_renders_times_in_utc_with_a_z() -> None:
    doc = alert_json(ALERT.acknowledge("dr a", T0))
    assert doc["opened_at"] == "2026-11-24T08:00:00Z"
    assert doc["acknowledged_at"] == "2026-11-24T08:00:00Z"
    assert doc["severity"] == "urgent" and doc["status"] == "acknowledged"
    assert doc["resolved_at"] is None


def test_default_thresholds_are_consistent_and_bad_overrides_are_named() -> None:
    assert DEFAULT_THRESHOLDS.problems() == []
    problems = DEFAULT_THRESHOLDS.with_overrides(
        {"spo2_clear": 85, "news2_spo2_scale": 3}
    ).problems()
    assert problems == [
        "spo2_critical <= spo2_low <= spo2_clear must hold",
        "news2_spo2_scale must be 1 or 2",
    ]


def test_a_device_is_stale_after_twice_its_scheduled_interval_or_one_hour() -> None:
    schedule = Schedule({"blood-pressure": 2})
    assert stale_after(["85354-9"], schedule, DEFAULT_THRESHOLDS) == timedelta(hours=24)
    assert stale_after(["8867-4"], schedule, DEFAULT_THRESHOLDS) == timedelta(hours=1)
    assert stale_after([], Schedule(), DEFAULT_THRESHOLDS) == timedelta(hours=1)


def test_yesterday_is_counted_in_the_patient_s_time_zone() -> None:
    day, start, end = last_complete_day(datetime(2026, 7, 2, 1, 0, tzinfo=UTC), "Europe/London")
    assert day.isoformat() == "2026-07-01"  # 02:00 in London
    assert start == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 7, 1, 23, 0, tzinfo=UTC)
