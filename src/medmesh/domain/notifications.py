"""Notifications outside the app: they tell a person that something is waiting, never what.
No notification carries health data (no names, no message text, no medication, no time of a
visit): only that there is something to see, and where to sign in. Quiet hours defer them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class NotificationKind(StrEnum):
    MESSAGE = "message"
    REFILL = "refill"
    APPOINTMENT = "appointment"
    REMINDER = "appointment-reminder"


# Subject and first line of each kind: nothing in them says what, about whom, or when.
TEXTS = {
    NotificationKind.MESSAGE: "You have a new secure message",
    NotificationKind.REFILL: "A refill request has changed",
    NotificationKind.APPOINTMENT: "An appointment has changed",
    NotificationKind.REMINDER: "You have an appointment coming up",
}


@dataclass(frozen=True, slots=True)
class Preferences:
    user_id: str
    email: str | None
    email_enabled: bool
    quiet_start: time | None  # local wall-clock time in `timezone`
    quiet_end: time | None
    timezone: str

    def deliverable_at(self, moment: datetime) -> datetime:
        """`moment`, or the end of the quiet hours it falls in (UTC)."""
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return moment
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        clock = local.time().replace(tzinfo=None)
        start, end = self.quiet_start, self.quiet_end
        quiet = start <= clock < end if start < end else clock >= start or clock < end
        if not quiet:
            return moment
        day = local.date() if clock < end else local.date() + timedelta(days=1)
        return datetime.combine(day, end, zone).astimezone(UTC)


def email_text(kind: NotificationKind, sign_in_url: str) -> tuple[str, str]:
    """Subject and body of a notification email."""
    headline = TEXTS[kind]
    body = (
        f"{headline}.\n\n"
        f"Sign in to see it: {sign_in_url}\n\n"
        "For your privacy this email says nothing more. If you did not expect it, you can change "
        "your notification settings after signing in.\n"
    )
    return f"medmesh: {headline.lower()}", body
