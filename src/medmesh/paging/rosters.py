"""On-call rosters: who covers a team when. Weekly shifts in the team's time zone (local wall
clock, so a shift stays 20:00–08:00 across daylight-saving changes) and one-off overrides
(instants) that win over the rotation; the time nobody covers is a gap."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class ShiftKind(StrEnum):
    WEEKLY = "weekly"
    OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class Shift:
    user_id: str
    kind: ShiftKind
    weekday: int | None = None  # 0 Monday … 6 Sunday
    start: time | None = None
    end: time | None = None  # at or before `start`: the next day
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def spans(
        self, zone: ZoneInfo, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        """The instants this shift covers that overlap [start, end)."""
        if self.kind is ShiftKind.OVERRIDE:
            assert self.starts_at is not None and self.ends_at is not None
            found = [(self.starts_at, self.ends_at)]
        else:
            assert self.weekday is not None and self.start is not None and self.end is not None
            found = []
            day = start.astimezone(zone).date() - timedelta(days=1)
            while datetime.combine(day, time(0), zone) < end:
                if day.weekday() == self.weekday:
                    begin = datetime.combine(day, self.start, zone)
                    finish_day = day if self.end > self.start else day + timedelta(days=1)
                    found.append((begin, datetime.combine(finish_day, self.end, zone)))
                day += timedelta(days=1)
        return [(a, b) for a, b in found if a < end and b > start]


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    organization_id: str
    name: str
    timezone: str
    lead_id: str | None
    fallback_id: str | None
    shifts: tuple[Shift, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def on_call(self, at: datetime) -> list[str]:
        """Who covers at `at`: the overrides if any, else the weekly rotation (may be empty)."""
        moment = (at, at + timedelta(microseconds=1))
        overrides = [s for s in self.shifts if s.kind is ShiftKind.OVERRIDE]
        weekly = [s for s in self.shifts if s.kind is ShiftKind.WEEKLY]
        for shifts in (overrides, weekly):
            found = [s.user_id for s in shifts if s.spans(self.zone, *moment)]
            if found:
                return list(dict.fromkeys(found))
        return []

    def segments(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, list[str]]]:
        """[start, end) cut where coverage changes, each piece with who covers it ([]: a gap)."""
        cuts = {start, end}
        for shift in self.shifts:
            for a, b in shift.spans(self.zone, start, end):
                cuts.update(c for c in (a, b) if start < c < end)
        ordered = sorted(cuts)
        pieces: list[tuple[datetime, datetime, list[str]]] = []
        for a, b in itertools.pairwise(ordered):
            who = self.on_call(a)
            if pieces and pieces[-1][2] == who and pieces[-1][1] == a:
                pieces[-1] = (pieces[-1][0], b, who)
            else:
                pieces.append((a, b, who))
        return pieces

    def gaps(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        return [(a, b) for a, b, who in self.segments(start, end) if not who]
