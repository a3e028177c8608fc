"""Slots come from weekly wall-clock hours in the clinician's zone: the same local time across
daylight-saving changes (so its UTC time moves), no slot in the hour that does not exist, one
in the hour that happens twice."""

from __future__ import annotations

from datetime import UTC, datetime, time

from medmesh.domain.appointments import (
    Schedule,
    ScheduleException,
    VisitKind,
    WeeklyHours,
    free_slots,
)


def _schedule(zone: str, weekday: int, start: time, end: time) -> Schedule:
    return Schedule(
        id="s",
        clinician_id="c",
        clinician_name="Dr",
        timezone=zone,
        slot_minutes=30,
        kinds=(VisitKind.VIDEO,),
        hours=(WeeklyHours(weekday, start, end),),
        book_ahead_days=60,
        cancel_hours=24,
        updated_at=datetime(2027, 1, 1, tzinfo=UTC),
    )


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_monday_nine_oclock_stays_nine_oclock_across_the_spring_change_in_berlin() -> None:
    mondays = _schedule("Europe/Berlin", 0, time(9), time(10))
    starts = list(mondays.slot_starts(_utc(2027, 3, 21), _utc(2027, 4, 3)))
    # 22 March: CET (UTC+1); 29 March, after the change on the 28th: CEST (UTC+2).
    assert starts == [
        _utc(2027, 3, 22, 8),
        _utc(2027, 3, 22, 8, 30),
        _utc(2027, 3, 29, 7),
        _utc(2027, 3, 29, 7, 30),
    ]


def test_new_york_changes_on_another_day_than_europe() -> None:
    mondays = _schedule("America/New_York", 0, time(9), time(9, 30))
    starts = list(mondays.slot_starts(_utc(2027, 3, 1), _utc(2027, 3, 16)))
    assert starts == [_utc(2027, 3, 1, 14), _utc(2027, 3, 8, 14), _utc(2027, 3, 15, 13)]


def test_the_skipped_hour_has_no_slot_and_the_repeated_hour_one() -> None:
    sundays = _schedule("Europe/Berlin", 6, time(2), time(3, 30))
    spring = list(sundays.slot_starts(_utc(2027, 3, 27), _utc(2027, 3, 29)))
    assert spring == [_utc(2027, 3, 28, 1)]  # 02:00 and 02:30 do not exist; 03:00 CEST does
    autumn = list(sundays.slot_starts(_utc(2027, 10, 30), _utc(2027, 11, 1)))
    # 02:00 and 02:30 CEST (their first occurrence), then 03:00 CET.
    assert autumn == [_utc(2027, 10, 31, 0), _utc(2027, 10, 31, 0, 30), _utc(2027, 10, 31, 2)]


def test_exceptions_and_booked_times_are_not_free() -> None:
    mondays = _schedule("UTC", 0, time(9), time(11))
    blocked = ScheduleException("x", "s", _utc(2027, 3, 1, 9, 15), _utc(2027, 3, 1, 9, 45))
    free = free_slots(
        mondays, [blocked], {_utc(2027, 3, 1, 10)}, _utc(2027, 3, 1), _utc(2027, 3, 2)
    )
    assert free == [_utc(2027, 3, 1, 10, 30)]
    assert mondays.offers(_utc(2027, 3, 1, 9, 30)) and not mondays.offers(_utc(2027, 3, 1, 9, 10))
