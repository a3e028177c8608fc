"""Repository for webhook deliveries: one row per (subscription, event), claimed by the sender
of any process, retried until delivered or failed.

A claim leases the row: it counts the attempt and moves `next_attempt_at` past the send's
deadline, so a process that dies mid-send leaves the row to be retried, not lost. Each later
update names the attempt it records, so a sender that outlived its lease cannot overwrite the
work of the one that took over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store._sql import insert_ignoring_duplicates
from medmesh.store.database import cipher_of
from medmesh.store.schema import webhook_deliveries

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
MAX_ERROR_LENGTH = 500
# The event a delivery notifies of is sealed with the key of the patient it concerns, so a copy
# of the database shows no alert detail and erasure reaches every copy; an event about no patient
# is sealed with this service key (docs/webhooks.md#at-rest).
WEBHOOKS_OWNER = "platform:webhooks"
_PAYLOAD = "webhook_deliveries.payload"

_t = webhook_deliveries.c


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    subscription_id: str
    event_id: str
    # The event as published (ids and codes), sealed: `WebhookDeliveries.event_of` opens it.
    # The notification itself is built per send.
    payload: bytes
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    patient_id: str | None = None


def _delivery(row: RowMapping) -> Delivery:
    return Delivery(
        id=row["id"],
        subscription_id=row["subscription_id"],
        event_id=row["event_id"],
        payload=bytes(row["payload"]),
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        patient_id=row["patient_id"],
    )


class WebhookDeliveries:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def enqueue(
        self,
        subscription_ids: Sequence[str],
        event_id: str,
        payload: bytes,
        now: datetime,
        patient_id: str | None = None,
    ) -> int:
        """A pending delivery of the event to each subscription; one that exists already (the
        same event seen by another process) is left alone. Returns how many were added.
        Raises DataKeyDestroyed when the patient was erased meanwhile."""
        if not subscription_ids:
            return 0
        key = await cipher_of(self._conn).key_or_create(patient_id or WEBHOOKS_OWNER)
        sealed = key.seal(payload, _PAYLOAD, event_id)
        rows = [
            {
                "subscription_id": subscription_id,
                "event_id": event_id,
                "patient_id": patient_id,
                "payload": sealed,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for subscription_id in subscription_ids
        ]
        insert = insert_ignoring_duplicates(self._conn, webhook_deliveries).returning(_t.id)
        return len((await self._conn.execute(insert, rows)).all())

    async def event_of(self, delivery: Delivery) -> bytes:
        """The event the delivery notifies of, as published; raises DataKeyDestroyed when its
        patient was erased."""
        cipher = cipher_of(self._conn)
        key = await cipher.key(delivery.patient_id or WEBHOOKS_OWNER)
        return key.open(delivery.payload, _PAYLOAD, delivery.event_id)

    async def claim(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        in_flight: Mapping[str, int],
        per_subscription: int,
    ) -> list[Delivery]:
        """Lease up to `limit` due deliveries, at most `per_subscription` in flight for any one
        subscription (counting `in_flight`), so a slow endpoint cannot take every slot.

        Rows another process is claiming are skipped (FOR UPDATE SKIP LOCKED on PostgreSQL; on
        SQLite the write transaction holds the database lock, so claims run one at a time).
        """
        if limit <= 0:
            return []
        candidates = await self._conn.execute(
            select(webhook_deliveries)
            .where(_t.status == PENDING, _t.next_attempt_at <= now)
            .order_by(_t.next_attempt_at, _t.id)
            .limit(limit * 4)
            .with_for_update(skip_locked=True)
        )
        busy = dict(in_flight)
        chosen: list[Delivery] = []
        for delivery in map(_delivery, candidates.mappings()):
            if len(chosen) == limit:
                break
            if busy.get(delivery.subscription_id, 0) >= per_subscription:
                continue
            busy[delivery.subscription_id] = busy.get(delivery.subscription_id, 0) + 1
            chosen.append(delivery)
        if chosen:
            await self._conn.execute(
                update(webhook_deliveries)
                .where(_t.id.in_([d.id for d in chosen]))
                .values(attempts=_t.attempts + 1, next_attempt_at=lease_until)
            )
        return [replace(d, attempts=d.attempts + 1, next_attempt_at=lease_until) for d in chosen]

    async def _finish(self, delivery: Delivery, **values: object) -> bool:
        result = await self._conn.execute(
            update(webhook_deliveries)
            .where(
                _t.id == delivery.id,
                _t.attempts == delivery.attempts,
                _t.status == PENDING,
            )
            .values(**values)
        )
        return bool(result.rowcount)

    async def delivered(self, delivery: Delivery, now: datetime) -> bool:
        return await self._finish(delivery, status=DELIVERED, delivered_at=now, last_error=None)

    async def retry_at(self, delivery: Delivery, at: datetime, error: str) -> bool:
        return await self._finish(delivery, next_attempt_at=at, last_error=error[:MAX_ERROR_LENGTH])

    async def failed(self, delivery: Delivery, error: str) -> bool:
        return await self._finish(delivery, status=FAILED, last_error=error[:MAX_ERROR_LENGTH])

    async def cancel_pending(self, subscription_id: str, reason: str) -> int:
        """Fail every pending delivery of a subscription (turned off, or in error)."""
        result = await self._conn.execute(
            update(webhook_deliveries)
            .where(_t.subscription_id == subscription_id, _t.status == PENDING)
            .values(status=FAILED, last_error=reason[:MAX_ERROR_LENGTH])
        )
        return int(result.rowcount)

    async def latest_outcomes(self, subscription_id: str, count: int) -> list[str]:
        """The statuses of the subscription's newest `count` finished deliveries, newest first."""
        rows = await self._conn.execute(
            select(_t.status)
            .where(_t.subscription_id == subscription_id, _t.status != PENDING)
            .order_by(_t.id.desc())
            .limit(count)
        )
        return list(rows.scalars())

    async def event_number(self, delivery: Delivery) -> int:
        """The delivery's place among its subscription's deliveries (1 for the first), so a
        receiver can tell when notifications were lost."""
        number = await self._conn.scalar(
            select(func.count())
            .select_from(webhook_deliveries)
            .where(_t.subscription_id == delivery.subscription_id, _t.id <= delivery.id)
        )
        return int(number or 0)

    async def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (leased ones: when their lease ends)."""
        due: datetime | None = await self._conn.scalar(
            select(func.min(_t.next_attempt_at)).where(_t.status == PENDING)
        )
        return due

    async def for_subscription(self, subscription_id: str) -> list[Delivery]:
        rows = await self._conn.execute(
            select(webhook_deliveries).where(_t.subscription_id == subscription_id).order_by(_t.id)
        )
        return [_delivery(r) for r in rows.mappings()]
