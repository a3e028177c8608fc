"""Repository for notification preferences and the outbox of notifications to send."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.notifications import NotificationKind, Preferences
from medmesh.store.schema import notification_outbox, notification_preferences, users

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    user_id: str
    kind: NotificationKind
    attempts: int


def _clock(text: str | None) -> time | None:
    return None if text is None else time.fromisoformat(text)


class Notifications:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def preferences(self, user_id: str) -> Preferences | None:
        row = (
            (
                await self._conn.execute(
                    select(notification_preferences).where(
                        notification_preferences.c.user_id == user_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return Preferences(
            user_id=user_id,
            email=row["email"],
            email_enabled=bool(row["email_enabled"]),
            quiet_start=_clock(row["quiet_start"]),
            quiet_end=_clock(row["quiet_end"]),
            timezone=row["timezone"],
        )

    async def set_preferences(self, preferences: Preferences, at: datetime) -> None:
        values = {
            "email": preferences.email,
            "email_enabled": preferences.email_enabled,
            "quiet_start": preferences.quiet_start.isoformat("minutes")
            if preferences.quiet_start
            else None,
            "quiet_end": preferences.quiet_end.isoformat("minutes")
            if preferences.quiet_end
            else None,
            "timezone": preferences.timezone,
            "updated_at": at,
        }
        changed = await self._conn.execute(
            update(notification_preferences)
            .where(notification_preferences.c.user_id == preferences.user_id)
            .values(values)
        )
        if not changed.rowcount:
            await self._conn.execute(
                notification_preferences.insert().values(user_id=preferences.user_id, **values)
            )

    async def enqueue(
        self,
        user_id: str,
        kind: NotificationKind,
        due_at: datetime,
        at: datetime,
        about: str | None = None,
    ) -> bool:
        """Add a notification, unless one of the kind waits for the person already (ten new
        messages make one email). Reminders are one per appointment."""
        waiting = select(notification_outbox.c.id).where(
            notification_outbox.c.user_id == user_id,
            notification_outbox.c.kind == kind.value,
            notification_outbox.c.status == PENDING,
        )
        if kind is NotificationKind.REMINDER:
            waiting = waiting.where(notification_outbox.c.about == about)
        if (await self._conn.execute(waiting)).first() is not None:
            return False
        await self._conn.execute(
            notification_outbox.insert().values(
                id=str(uuid.uuid4()),
                user_id=user_id,
                kind=kind.value,
                about=about,
                status=PENDING,
                due_at=due_at,
                created_at=at,
                attempts=0,
            )
        )
        return True

    async def drop_reminders(self, about: str) -> None:
        await self._conn.execute(
            delete(notification_outbox).where(
                notification_outbox.c.about == about, notification_outbox.c.status == PENDING
            )
        )

    async def due(self, now: datetime, limit: int = 50) -> list[Pending]:
        rows = await self._conn.execute(
            select(
                notification_outbox.c.id,
                notification_outbox.c.user_id,
                notification_outbox.c.kind,
                notification_outbox.c.attempts,
            )
            .where(notification_outbox.c.status == PENDING, notification_outbox.c.due_at <= now)
            .order_by(notification_outbox.c.due_at)
            .limit(limit)
        )
        return [Pending(r.id, r.user_id, NotificationKind(r.kind), r.attempts) for r in rows]

    async def sent(self, notification_id: str, at: datetime) -> None:
        await self._conn.execute(
            update(notification_outbox)
            .where(notification_outbox.c.id == notification_id)
            .values(status=SENT, sent_at=at)
        )

    async def failed(self, notification: Pending, error: str, retry_at: datetime | None) -> None:
        """Count a failed attempt: try again at `retry_at`, or give up (None)."""
        await self._conn.execute(
            update(notification_outbox)
            .where(notification_outbox.c.id == notification.id)
            .values(
                attempts=notification.attempts + 1,
                last_error=error[:200],
                status=PENDING if retry_at is not None else FAILED,
                due_at=retry_at if retry_at is not None else notification_outbox.c.due_at,
            )
        )

    async def history(self, user_id: str) -> Sequence[tuple[str, str, datetime]]:
        """(kind, status, due) of the person's notifications, oldest first (for tests, ops)."""
        rows = await self._conn.execute(
            select(
                notification_outbox.c.kind,
                notification_outbox.c.status,
                notification_outbox.c.due_at,
            )
            .where(notification_outbox.c.user_id == user_id)
            .order_by(notification_outbox.c.created_at)
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def patient_accounts(conn: AsyncConnection, patient_id: str) -> list[str]:
    rows = await conn.execute(
        select(users.c.id).where(users.c.patient_id == patient_id, users.c.disabled.is_(False))
    )
    return [r[0] for r in rows]


def backoff(attempts: int) -> timedelta:
    return timedelta(minutes=min(60, 2**attempts))
