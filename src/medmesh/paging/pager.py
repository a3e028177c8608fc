"""The pager: a worker that turns new alerts into pages for the first step of each patient's
escalation chain, sends due pages on each person's channels in order (a failed channel falls
through to the next), and moves a page not acknowledged in time up the chain.

Pages for one person are grouped: an alert joins the person's page still held or sent and
unanswered, so a storm of alerts is one page that says how many are waiting. An alert is
paged again only when it gets worse (at most `max_pages_per_alert` times); a snoozed alert
only when it gets worse than it was when snoozed, or when the snooze ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Alert, AlertStatus, Severity
from medmesh.domain.errors import NotFound
from medmesh.events.bus import EventBus, Subscription
from medmesh.events.model import ALERT
from medmesh.paging import caregivers, chain, codes
from medmesh.paging.channels import Channel, ChannelKind, DeliveryFailed, SmtpServer, deliver
from medmesh.paging.repository import (
    CLOSED,
    ESCALATED,
    FAILED,
    HELD,
    SENDING,
    SENT,
    Channels,
    Page,
    Pages,
    Snoozes,
)
from medmesh.paging.texts import page_text
from medmesh.rules.notify import publish_alerts
from medmesh.store.alerts import Alerts
from medmesh.store.care_plans import CarePlans
from medmesh.store.database import Database
from medmesh.store.notifications import Notifications
from medmesh.workers import wait_for_wake

log = logging.getLogger(__name__)

QUIET_HOURS_APPLY = (Severity.INFO, Severity.WARNING)  # critical and urgent page at any hour


@dataclass(frozen=True, slots=True)
class PagerSettings:
    base_url: str  # the link in a page is {base_url}/page/{code}
    smtp: SmtpServer | None
    hold: timedelta = timedelta(seconds=5)  # a new page waits this long for others to join
    link_valid: timedelta = timedelta(hours=12)
    max_pages_per_alert: int = 3
    retry_after: timedelta = timedelta(minutes=1)  # every channel failed: try again after
    max_rounds: int = 3  # then the page counts as unanswered and escalates
    poll_seconds: float = 1.0
    lowest_paged: Severity = Severity.WARNING


def _now() -> datetime:
    return datetime.now(UTC)


class Pager:
    """Started and stopped by `Services` (always: people without channels are not paged)."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        settings: PagerSettings,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._bus = bus
        self._settings = settings
        self._now = now
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = self._bus.subscribe()
        self._tasks = [
            asyncio.create_task(self._listen(self._subscription)),
            asyncio.create_task(self._loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            self._subscription.close()

    async def _listen(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.kind != ALERT:
                continue
            try:
                await self.on_alert(str(event.data["id"]))
            except Exception as exc:
                log.error("paging for an alert failed (%s)", type(exc).__name__)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:
                log.error("paging failed (%s)", type(exc).__name__)
            self._wake.clear()
            await wait_for_wake(self._wake, self._settings.poll_seconds)

    async def tick(self) -> int:
        """Send what is due and escalate what is overdue; returns pages sent."""
        async with self._database.read() as conn:
            woken = await Snoozes(conn).ended(self._now())
        for alert_id in woken:  # a snooze that ends pages the alert again, if still open
            await self.on_alert(alert_id)
        sent = await self.send_due()
        await self.escalate_overdue()
        return sent

    async def on_alert(self, alert_id: str) -> None:
        """Page the first step of the chain for a new or worsened open alert."""
        now = self._now()
        async with self._database.write() as conn:
            try:
                alert = await Alerts(conn).get(alert_id)
            except NotFound:
                return
            if alert.status is not AlertStatus.OPEN:
                return
            if alert.severity.rank < self._settings.lowest_paged.rank:
                return
            times, highest = await Pages(conn).times_paged(alert.id)
            snooze = await Snoozes(conn).get(alert.id)
            if snooze is not None:
                if alert.severity.rank <= snooze.severity.rank and now < snooze.until:
                    return
                await Snoozes(conn).clear(alert.id)  # worse, or over: pages again
            elif times and highest is not None and alert.severity.rank <= highest.rank:
                return
            if times >= self._settings.max_pages_per_alert:
                return
            await self._page_step(conn, alert, 0, now)
            for person in await caregivers.caregivers_paged(conn, alert, now):
                await self._attach(conn, person, caregivers.CAREGIVER_LEVEL, alert, now)
        self._wake.set()

    async def _page_step(
        self, conn: AsyncConnection, alert: Alert, level: int, now: datetime
    ) -> bool:
        """Attach the alert to a page for each recipient of step `level` (the first step
        from `level` on that reaches someone); False when the chain is exhausted."""
        plan = await CarePlans(conn).get(alert.patient_id)
        steps = await chain.chain_of(conn, plan)
        while level < len(steps):
            people = await chain.recipients(conn, plan, steps[level], now)
            if people:
                break
            level += 1
        else:
            log.warning("an alert reached the end of its escalation chain unanswered")
            return False
        for person in people:
            await self._attach(conn, person, level, alert, now)
        return True

    async def _attach(
        self, conn: AsyncConnection, person: str, level: int, alert: Alert, now: datetime
    ) -> None:
        """Put the alert on the person's open page at this level, or on a new one held for
        others to join (until the end of their quiet hours for lower severities)."""
        pages = Pages(conn)
        page = await pages.open_for(person, level)
        if page is None:
            due = now + self._settings.hold
            if alert.severity in QUIET_HOURS_APPLY:
                preferences = await Notifications(conn).preferences(person)
                if preferences is not None:
                    due = preferences.deliverable_at(due)
            page = await pages.create(person, level, alert.severity, due, now)
        elif alert.severity not in QUIET_HOURS_APPLY:
            await pages.bring_forward(page.id, now + self._settings.hold)
        await pages.attach(page, alert.id, alert.patient_id, alert.severity)

    async def send_due(self) -> int:
        now = self._now()
        async with self._database.read() as conn:
            due = await Pages(conn).due(now)
        sent = 0
        for page in due:
            sent += await self._send(page, now)
        return sent

    async def _send(self, page: Page, now: datetime) -> int:
        async with self._database.write() as conn:
            if not await Pages(conn).set_status(page.id, SENDING, expected=HELD):
                return 0  # another process (or tick) is sending it
        async with self._database.read() as conn:
            alert_ids = await Pages(conn).alert_ids(page.id)
            channels = await Channels(conn).of(page.recipient_id)
            if not channels:
                preferences = await Notifications(conn).preferences(page.recipient_id)
                if preferences is not None and preferences.email and preferences.email_enabled:
                    channels = [
                        Channel(
                            "",
                            page.recipient_id,
                            0,
                            ChannelKind.EMAIL,
                            preferences.email,
                            "e-mail",
                            now,
                        )
                    ]
            open_alerts = [
                a for a in await _alerts(conn, alert_ids) if a.status is AlertStatus.OPEN
            ]
            caregiver = page.level == caregivers.CAREGIVER_LEVEL
            if caregiver:  # revoked meanwhile: nothing of that patient is paged
                open_alerts = [
                    a
                    for a in open_alerts
                    if await caregivers.still_caregiver(conn, page.recipient_id, a.patient_id, now)
                ]
        if not open_alerts:
            async with self._database.write() as conn:
                await Pages(conn).set_status(page.id, CLOSED, expected=SENDING)
            return 0
        severity = max((a.severity for a in open_alerts), key=lambda s: s.rank)
        for channel in channels:
            code = codes.new_code()
            subject, body = page_text(
                severity,
                len(open_alerts),
                f"{self._settings.base_url}/page/{code}",
                codes.shown(code),
                caregiver=caregiver,
            )
            try:
                await deliver(channel, subject, body, self._settings.smtp)
            except DeliveryFailed as failed:
                async with self._database.write() as conn:
                    await Pages(conn).record_delivery(
                        page.id,
                        channel if channel.id else None,
                        channel.kind.value,
                        "failed",
                        str(failed),
                        self._now(),
                    )
                log.warning("a page failed on a %s channel (%s)", channel.kind.value, failed)
                continue
            async with self._database.write() as conn:
                pages = Pages(conn)
                await pages.record_delivery(
                    page.id,
                    channel if channel.id else None,
                    channel.kind.value,
                    "sent",
                    None,
                    self._now(),
                    codes.code_hash(code),
                    now + self._settings.link_valid,
                )
                escalate_at = None  # a caregiver's page never escalates
                if not caregiver:
                    plan = await CarePlans(conn).get(open_alerts[0].patient_id)
                    steps = await chain.chain_of(conn, plan)
                    step = steps[min(page.level, len(steps) - 1)]
                    escalate_at = now + chain.wait(plan, step, severity)
                await pages.set_status(
                    page.id,
                    SENT,
                    expected=SENDING,
                    sent_at=self._now(),
                    severity=severity.value,
                    escalate_at=escalate_at,
                )
            return 1
        # Every channel failed (or there is none): retry, and after `max_rounds` escalate.
        async with self._database.write() as conn:
            pages = Pages(conn)
            rounds = len([d for d in await pages.deliveries(page.id)]) // max(1, len(channels))
            if not channels or rounds >= self._settings.max_rounds:
                await pages.record_delivery(page.id, None, "none", "failed", "Unreachable", now)
                await pages.set_status(
                    page.id,
                    FAILED,
                    expected=SENDING,
                    escalate_at=None if caregiver else now,
                )
            else:
                await pages.reschedule(page.id, now + self._settings.retry_after)
        return 0

    async def escalate_overdue(self) -> int:
        """Page the next step for each unanswered page whose wait is over."""
        now = self._now()
        async with self._database.read() as conn:
            overdue = await Pages(conn).overdue(now)
        moved = 0
        changed: list[Alert] = []
        for page in overdue:
            async with self._database.write() as conn:
                pages = Pages(conn)
                if not await pages.set_status(page.id, ESCALATED, expected=page.status):
                    continue  # another process took it
                alerts = Alerts(conn)
                snoozes = Snoozes(conn)
                for alert in await _alerts(conn, await pages.alert_ids(page.id)):
                    if alert.status is not AlertStatus.OPEN:
                        continue
                    snooze = await snoozes.get(alert.id)
                    if snooze is not None and now < snooze.until:
                        continue
                    if await self._page_step(conn, alert, page.level + 1, now):
                        moved += 1
                        if alert.escalation_level <= page.level and await alerts.escalate(
                            alert.id, alert.escalation_level, now
                        ):
                            changed.append(await alerts.get(alert.id))
        await publish_alerts(self._bus, changed)
        if moved:
            self._wake.set()
        return moved


async def _alerts(conn: AsyncConnection, alert_ids: list[str]) -> list[Alert]:
    found: list[Alert] = []
    repository = Alerts(conn)
    for alert_id in alert_ids:
        with contextlib.suppress(NotFound):
            found.append(await repository.get(alert_id))
    return found
