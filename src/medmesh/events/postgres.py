"""PostgreSQL LISTEN/NOTIFY: events published in one process reach the subscribers of every
process sharing the database (ingest workers raise alerts, API processes serve dashboards).

`own_only` subscribers (the webhook dispatcher) are handed the events of this process at
publish time, whole, and never the notifications: each event is dispatched once across
processes. The others get every notification, this process's own included (PostgreSQL echoes
them to the listening connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from medmesh.events.bus import InProcessBus, Subscription
from medmesh.events.model import Event

log = logging.getLogger(__name__)

CHANNEL = "medmesh_events"
MAX_PAYLOAD = 7900  # NOTIFY payloads must stay under 8000 bytes


class PostgresBus:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._local = InProcessBus()
        self._listener: Any = None
        self._publisher: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._listener = await asyncpg.connect(self._dsn)
        await self._listener.add_listener(CHANNEL, self._on_notify)
        self._publisher = await asyncpg.connect(self._dsn)

    async def stop(self) -> None:
        for conn in (self._listener, self._publisher):
            if conn is not None:
                await conn.close()
        self._listener = self._publisher = None
        await self._local.stop()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = Event.from_json(payload)
        except (ValueError, KeyError):
            log.warning("ignored a malformed event notification")
            return
        self._local.deliver_shared(event)

    async def publish(self, event: Event) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for event in events:
            self._local.deliver_own(event)
        payloads = [_payload(event) for event in events]
        async with self._lock:  # one asyncpg connection runs one query at a time
            if len(payloads) == 1:
                await self._publisher.execute("SELECT pg_notify($1, $2)", CHANNEL, payloads[0])
            else:  # one round trip, one transaction; notified in the array's order
                await self._publisher.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads
                )

    def subscribe(self, maxsize: int = 1000, *, own_only: bool = False) -> Subscription:
        return self._local.subscribe(maxsize, own_only=own_only)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._local.unsubscribe(subscription)


def _payload(event: Event) -> str:
    payload = event.to_json().decode()
    if len(payload.encode()) > MAX_PAYLOAD:
        # Too large for NOTIFY: send the envelope; consumers re-read the details.
        envelope = Event(event.kind, event.patient_id, {"truncated": True}, event.id, event.at)
        payload = envelope.to_json().decode()
    return payload
