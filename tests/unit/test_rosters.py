"""On-call rosters: weekly shifts on the team's local wall clock (across daylight-saving
changes), overrides that win over the rotation, and the gaps nobody covers."""

from __future__ import annotations

from datetime import UTC, datetime, time

from medmesh.paging.rosters import Shift, ShiftKind, Team

NIGHT = time(20), time(8)


def _team(*shifts: Shift) -> Team:
    return Team("t", "org", "nights", "Europe/Berlin", "lead", "fallback", shifts)


def test_a_night_shift_keeps_its_local_hours_across_the_spring_change() -> None:
    # Saturday 28 March 2026 20:00 CET to Sunday 29 March 08:00 CEST (clocks go forward).
    team = _team(Shift("ann", ShiftKind.WEEKLY, 5, *NIGHT))
    assert team.on_call(datetime(2026, 3, 28, 19, 0, tzinfo=UTC)) == ["ann"]  # 20:00 CET
    assert team.on_call(datetime(2026, 3, 29, 5, 59, tzinfo=UTC)) == ["ann"]  # 07:59 CEST
    assert team.on_call(datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) == []  # 08:00 CEST
    assert team.on_call(datetime(2026, 3, 28, 18, 59, tzinfo=UTC)) == []


def test_an_override_wins_over_the_rotation() -> None:
    team = _team(
        Shift("ann", ShiftKind.WEEKLY, 0, time(0), time(0)),  # all Monday
        Shift(
            "bob",
            ShiftKind.OVERRIDE,
            starts_at=datetime(2026, 12, 7, 10, tzinfo=UTC),
            ends_at=datetime(2026, 12, 7, 12, tzinfo=UTC),
        ),
    )
    assert team.on_call(datetime(2026, 12, 7, 9, tzinfo=UTC)) == ["ann"]
    assert team.on_call(datetime(2026, 12, 7, 11, tzinfo=UTC)) == ["bob"]


def test_the_gaps_of_a_week_are_the_times_nobody_covers() -> None:
    days = [Shift("ann", ShiftKind.WEEKLY, d, time(8), time(20)) for d in range(7)]
    nights = [Shift("bob", ShiftKind.WEEKLY, d, *NIGHT) for d in range(6)]  # not Sunday night
    team = _team(*days, *nights)
    start = datetime(2026, 12, 7, 7, tzinfo=UTC)  # Monday 08:00 Berlin
    gaps = team.gaps(start, datetime(2026, 12, 14, 7, tzinfo=UTC))
    assert gaps == [(datetime(2026, 12, 13, 19, tzinfo=UTC), datetime(2026, 12, 14, 7, tzinfo=UTC))]
