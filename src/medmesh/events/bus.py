"""The bus interface and the in-process bus (the default: one process serves everything).

A subscriber sees every event of every process sharing the bus, unless it subscribes with
`own_only`: then it sees only the events this process published. The webhook dispatcher does,
so that with several processes each event is dispatched once, by the process that published it
(docs/webhooks.md); dashboards and SSE streams see everything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from medmesh.events.model import Event

log = logging.getLogger(__name__)


class Subscription:
    """One consumer's queue. A slow consumer loses its oldest events rather than holding up
    the publisher (dashboards re-read state on reconnect); `dropped` counts them."""

    def __init__(self, bus: InProcessBus, maxsize: int, *, own_only: bool = False) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.own_only = own_only
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def take_waiting(self, limit: int) -> list[Event]:
        """Up to `limit` of the events already queued, oldest first, without waiting."""
        taken: list[Event] = []
        while len(taken) < limit and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    @property
    def waiting(self) -> int:
        """How many events are queued, not yet taken."""
        return self._queue.qsize()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Publish the events in order (on PostgreSQL in one round trip)."""
        ...

    def subscribe(self, maxsize: int = 1000, *, own_only: bool = False) -> Subscription: ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessBus:
    """Fan-out to the subscribers of this process (every event is this process's own)."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    async def publish(self, event: Event) -> None:
        self.deliver(event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self.deliver(event)

    def deliver(self, event: Event) -> None:
        """Hand the event to every subscriber."""
        for subscription in list(self._subscriptions):
            subscription.offer(event)

    def deliver_own(self, event: Event) -> None:
        """Hand an event this process published to the `own_only` subscribers."""
        for subscription in list(self._subscriptions):
            if subscription.own_only:
                subscription.offer(event)

    def deliver_shared(self, event: Event) -> None:
        """Hand an event that came over a shared bus to the other subscribers."""
        for subscription in list(self._subscriptions):
            if not subscription.own_only:
                subscription.offer(event)

    def subscribe(self, maxsize: int = 1000, *, own_only: bool = False) -> Subscription:
        subscription = Subscription(self, maxsize, own_only=own_only)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._subscriptions.clear()
