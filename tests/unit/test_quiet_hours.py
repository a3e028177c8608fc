"""Quiet hours defer a notification to their end, in the person's own time zone, also when
they span midnight; outside them it goes at once."""

from __future__ import annotations

from datetime import UTC, datetime, time

from medmesh.domain.notifications import NotificationKind, Preferences, email_text


def _prefs(start: time | None, end: time | None, zone: str = "Europe/Berlin") -> Preferences:
    return Preferences("u", "a@example.org", True, start, end, zone)


def test_outside_quiet_hours_a_notification_goes_at_once() -> None:
    noon = datetime(2027, 1, 10, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    assert _prefs(time(22), time(7)).deliverable_at(noon) == noon
    assert _prefs(None, None).deliverable_at(noon) == noon


def test_quiet_hours_across_midnight_defer_to_the_morning() -> None:
    late = datetime(2027, 1, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    assert _prefs(time(22), time(7)).deliverable_at(late) == datetime(2027, 1, 11, 6, tzinfo=UTC)
    early = datetime(2027, 1, 11, 4, 0, tzinfo=UTC)  # 05:00 in Berlin
    assert _prefs(time(22), time(7)).deliverable_at(early) == datetime(2027, 1, 11, 6, tzinfo=UTC)


def test_quiet_hours_within_a_day_and_in_summer_time() -> None:
    lunch = datetime(2027, 7, 10, 10, 30, tzinfo=UTC)  # 12:30 CEST
    assert _prefs(time(12), time(13)).deliverable_at(lunch) == datetime(2027, 7, 10, 11, tzinfo=UTC)


def test_the_email_says_something_waits_and_nothing_more() -> None:
    for kind in NotificationKind:
        subject, body = email_text(kind, "https://clinic.example/me")
        assert "https://clinic.example/me" in body
        assert subject.startswith("medmesh: ")
