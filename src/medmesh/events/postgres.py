"""PostgreSQL LISTEN/NOTIFY: events published in one process reach the subscribers of every
process sharing the database (ingest workers raise alerts, API processes serve dashboards)."""

from __future__ import annotations

import asyncio
import logging
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
        self._local.deliver(event)

    async def publish(self, event: Event) -> None:
        payload = event.to_json().decode()
        if len(payload.encode()) > MAX_PAYLOAD:
            # Too large for NOTIFY: send the envelope; consumers re-read the details.
            envelope = Event(event.kind, event.patient_id, {"truncated": True}, event.id, event.at)
            payload = envelope.to_json().decode()
        async with self._lock:  # one asyncpg connection runs one query at a time
            await self._publisher.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        return self._local.subscribe(maxsize)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._local.unsubscribe(subscription)
