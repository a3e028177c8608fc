"""The notifier: a worker that turns care events (a message, a refill decision, a booking)
into notifications for the people concerned, and sends the ones due by email (SMTP), after
quiet hours, with retries. A notification says that something is waiting, never what
(domain/notifications.py), so nothing of a record leaves in it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import aiosmtplib

from medmesh.domain.notifications import NotificationKind, Preferences, email_text
from medmesh.events.bus import EventBus, Subscription
from medmesh.events.model import APPOINTMENT, MESSAGE, REFILL, Event
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.notifications import Notifications, Pending, backoff, patient_accounts
from medmesh.workers import wait_for_wake

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class NotifierSettings:
    smtp_host: str
    smtp_port: int
    sender: str  # the From address
    sign_in_url: str  # where people sign in (the link in every email)
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    reminder_before: timedelta = timedelta(hours=24)
    poll_seconds: float = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Started and stopped by `Services` when SMTP is configured."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        settings: NotifierSettings,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._bus = bus
        self._settings = settings
        self._now = now
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    async def start(self) -> None:
        subscription = self._bus.subscribe()
        self._tasks = [
            asyncio.create_task(self._listen(subscription)),
            asyncio.create_task(self._send_loop()),
        ]
        self._subscription = subscription

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._subscription.close()

    async def _listen(self, subscription: Subscription) -> None:
        async for event in subscription:
            try:
                await self.on_event(event)
            except Exception as exc:
                log.error(
                    "notifications for a %s event failed (%s)", event.kind, type(exc).__name__
                )

    async def on_event(self, event: Event) -> None:
        """Queue notifications for an event (public so tests and tools can feed one)."""
        if event.patient_id is None or event.kind not in (MESSAGE, REFILL, APPOINTMENT):
            return
        now = self._now()
        async with self._database.write() as conn:
            outbox = Notifications(conn)
            patient_users = await patient_accounts(conn, event.patient_id)
            team = [user for user, _ in await CareTeams(conn).members(event.patient_id)]
            if event.kind == MESSAGE:
                to_team = event.data.get("side") == "patient"
                await self._queue(
                    outbox, team if to_team else patient_users, NotificationKind.MESSAGE, now
                )
            elif event.kind == REFILL:
                to_team = event.data.get("status") == "open"
                await self._queue(
                    outbox, team if to_team else patient_users, NotificationKind.REFILL, now
                )
            else:
                appointment_id = str(event.data.get("appointment_id"))
                clinician = str(event.data.get("clinician_id"))
                await self._queue(
                    outbox, [*patient_users, clinician], NotificationKind.APPOINTMENT, now
                )
                await outbox.drop_reminders(appointment_id)
                start = event.data.get("start")
                if event.data.get("status") == "booked" and isinstance(start, str):
                    remind_at = datetime.fromisoformat(start) - self._settings.reminder_before
                    if remind_at > now:
                        await self._queue(
                            outbox,
                            patient_users,
                            NotificationKind.REMINDER,
                            remind_at,
                            about=appointment_id,
                            created=now,
                        )
        self._wake.set()

    async def _queue(
        self,
        outbox: Notifications,
        user_ids: list[str],
        kind: NotificationKind,
        when: datetime,
        *,
        about: str | None = None,
        created: datetime | None = None,
    ) -> None:
        for user_id in dict.fromkeys(user_ids):
            preferences = await outbox.preferences(user_id)
            if preferences is None or not preferences.email_enabled or not preferences.email:
                continue
            due = preferences.deliverable_at(when)
            await outbox.enqueue(user_id, kind, due, created or when, about)

    async def _send_loop(self) -> None:
        while True:
            try:
                await self.send_due()
            except Exception as exc:
                log.error("sending notifications failed (%s)", type(exc).__name__)
            self._wake.clear()
            await wait_for_wake(self._wake, self._settings.poll_seconds)

    async def send_due(self) -> int:
        """Send what is due now; returns how many were sent."""
        now = self._now()
        async with self._database.read() as conn:
            due = await Notifications(conn).due(now)
            addresses: dict[str, Preferences | None] = {
                n.user_id: await Notifications(conn).preferences(n.user_id) for n in due
            }
        sent = 0
        for notification in due:
            preferences = addresses[notification.user_id]
            error: str | None = None
            if preferences is None or not preferences.email or not preferences.email_enabled:
                error = "no email address"
            else:
                try:
                    await self._send(preferences.email, notification)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    error = type(exc).__name__
            async with self._database.write() as conn:
                if error is None:
                    await Notifications(conn).sent(notification.id, self._now())
                    sent += 1
                else:
                    retry = notification.attempts + 1 < MAX_ATTEMPTS and error != "no email address"
                    retry_at = now + backoff(notification.attempts) if retry else None
                    await Notifications(conn).failed(notification, error, retry_at)
        return sent

    async def _send(self, address: str, notification: Pending) -> None:
        subject, body = email_text(notification.kind, self._settings.sign_in_url)
        message = EmailMessage()
        message["From"] = self._settings.sender
        message["To"] = address
        message["Subject"] = subject
        message.set_content(body)
        settings = self._settings
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.username,
            password=settings.password,
            start_tls=settings.starttls,
            timeout=10,
        )
