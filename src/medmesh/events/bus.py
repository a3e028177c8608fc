"""The bus interface and the in-process bus (the default: one process serves everything)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from medmesh.events.model import Event

log = logging.getLogger(__name__)


class Subscription:
    """One consumer's queue. A slow consumer loses its oldest events rather than holding up
    the publisher (dashboards re-read state on reconnect); `dropped` counts them."""

    def __init__(self, bus: InProcessBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    def subscribe(self, maxsize: int = 1000) -> Subscription: ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessBus:
    """Fan-out to the subscribers of this process."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    async def publish(self, event: Event) -> None:
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event)

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._subscriptions.clear()
