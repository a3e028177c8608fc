"""Repository for FHIR Subscriptions (rest-hook): what to notify, where, and the key that signs
each notification."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import NotFound
from medmesh.store.schema import subscriptions

ACTIVE = "active"
ERROR = "error"  # notifications kept failing; no more are sent
OFF = "off"  # deleted by a client
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    id: str
    criteria: str
    endpoint: str
    signing_secret: str
    status: str
    resource: dict[str, Any]  # the Subscription as accepted, without id and status
    created_at: datetime
    created_by: str
    last_error: str | None = None


def _subscription(row: RowMapping) -> StoredSubscription:
    return StoredSubscription(
        id=row["id"],
        criteria=row["criteria"],
        endpoint=row["endpoint"],
        signing_secret=row["signing_secret"],
        status=row["status"],
        resource=orjson.loads(row["resource"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_error=row["last_error"],
    )


# Read for every batch of events the webhook dispatcher matches, built once (store/_sql.py).
_ACTIVE = select(subscriptions).where(subscriptions.c.status == ACTIVE)


class Subscriptions:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, subscription: StoredSubscription) -> None:
        await self._conn.execute(
            subscriptions.insert().values(
                id=subscription.id,
                criteria=subscription.criteria,
                endpoint=subscription.endpoint,
                signing_secret=subscription.signing_secret,
                status=subscription.status,
                resource=orjson.dumps(subscription.resource).decode(),
                created_at=subscription.created_at,
                created_by=subscription.created_by,
                last_error=subscription.last_error,
            )
        )

    async def find(self, subscription_id: str) -> StoredSubscription | None:
        query = select(subscriptions).where(subscriptions.c.id == subscription_id)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _subscription(row)

    async def get(self, subscription_id: str) -> StoredSubscription:
        found = await self.find(subscription_id)
        if found is None:
            raise NotFound("Subscription not found")
        return found

    async def search(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        created_by: Collection[str] | None = None,
    ) -> list[StoredSubscription]:
        """`created_by`: only subscriptions made with these tokens (ids)."""
        query = select(subscriptions).order_by(subscriptions.c.created_at, subscriptions.c.id)
        if created_by is not None:
            query = query.where(subscriptions.c.created_by.in_(list(created_by)))
        if status is not None:
            query = query.where(subscriptions.c.status == status)
        rows = await self._conn.execute(query.limit(limit).offset(offset))
        return [_subscription(r) for r in rows.mappings()]

    async def active(self) -> list[StoredSubscription]:
        rows = await self._conn.execute(_ACTIVE)
        return [_subscription(r) for r in rows.mappings()]

    async def set_status(
        self, subscription_id: str, status: str, last_error: str | None = None
    ) -> bool:
        """Change the status; an `off` subscription stays off. False if nothing changed."""
        values: dict[str, Any] = {"status": status}
        if last_error is not None:
            values["last_error"] = last_error[:MAX_ERROR_LENGTH]
        result = await self._conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == subscription_id, subscriptions.c.status != OFF)
            .values(**values)
        )
        return bool(result.rowcount)
