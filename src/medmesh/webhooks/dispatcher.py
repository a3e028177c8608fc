"""The dispatcher: turns each bus event into a pending delivery for every active Subscription it
matches, and runs the sender that delivers them.

Every process runs one, and it dispatches only the events its own process published (an
`own_only` bus subscription): with several processes sharing PostgreSQL LISTEN/NOTIFY, each
event is matched, decided and queued once, not once per process. A delivery is also keyed by
(subscription, event), so an event dispatched twice would still store one row and make one POST.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from medmesh.domain.subscription import Criteria, InvalidSubscription, parse_criteria
from medmesh.events.bus import EventBus, Subscription
from medmesh.events.model import ALERT, MESSAGE, READINGS, REFILL, Event
from medmesh.store.database import Database
from medmesh.store.subscriptions import StoredSubscription, Subscriptions
from medmesh.store.webhook_deliveries import WebhookDeliveries
from medmesh.webhooks.policy import WebhookPolicy
from medmesh.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # events waiting for the dispatcher before the bus drops the oldest
DISPATCH_BATCH = 500  # events matched against one read of the active subscriptions, at most
NOTIFIED = (READINGS, ALERT, REFILL, MESSAGE)  # the event kinds a Subscription may match


def matches(criteria: Criteria, event: Event) -> bool:
    """Whether the event is one the criteria ask to be notified of."""
    if criteria.patient_id is not None and event.patient_id != criteria.patient_id:
        return False
    if event.kind == READINGS and criteria.resource_type == "Observation":
        codes = event.data.get("codes")
        if not criteria.codes or not isinstance(codes, list):
            return True  # an event too large to carry its codes may hold any code
        return not set(criteria.codes).isdisjoint(codes)
    if event.kind == REFILL and criteria.resource_type == "MedicationRequest":
        # An approval renews the MedicationRequest: what a pharmacy follows.
        return event.data.get("status") == "approved" and bool(event.data.get("renewal_id"))
    if event.kind == MESSAGE and criteria.resource_type == "Communication":
        return True
    return event.kind == ALERT and criteria.resource_type == "Flag"


@functools.lru_cache(maxsize=4096)
def _criteria(text: str) -> Criteria | None:
    try:
        return parse_criteria(text)
    except InvalidSubscription:
        return None  # stored before a rule changed; it matches nothing


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookDispatcher:
    def __init__(
        self,
        database: Database,
        bus: EventBus,
        policy: WebhookPolicy,
        clock: Callable[[], datetime] = _now,
        audience: Callable[[StoredSubscription, Event], Awaitable[bool]] | None = None,
    ) -> None:
        """`audience` decides, when an event happens, whether a matching subscription's owner
        may be told of it (the access policy, wired in by the composition root)."""
        self._database = database
        self._audience = audience
        self._bus = bus
        self._clock = clock
        self.sender = WebhookSender(database, policy, clock)
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._subscription = self._bus.subscribe(QUEUE_SIZE, own_only=True)
        await self.sender.start()
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            self._subscription.close()
        await self.sender.stop()

    async def _run(self) -> None:
        assert self._subscription is not None
        dropped = 0
        while True:
            first = await self._subscription.get()
            events = [first, *self._subscription.take_waiting(DISPATCH_BATCH - 1)]
            if self._subscription.dropped > dropped:
                log.error(
                    "webhook dispatcher fell behind: %d events dropped",
                    self._subscription.dropped - dropped,
                )
                dropped = self._subscription.dropped
            try:
                await self.dispatch_many(events)
            except Exception:
                # Each on its own, so that one event that cannot be queued costs only itself.
                for event in events:
                    try:
                        await self.dispatch(event)
                    except Exception as exc:  # one event lost is better than a dispatcher stopped
                        log.error(
                            "webhook dispatch of event %s failed (%s)", event.id, type(exc).__name__
                        )

    async def dispatch(self, event: Event) -> int:
        """Queue the event for the subscriptions it matches; returns how many rows were added
        (0 when another process queued them first)."""
        return await self.dispatch_many([event])

    async def dispatch_many(self, events: Sequence[Event]) -> int:
        """`dispatch` of each event, in order, with the active subscriptions read once for all
        of them: under load the events of several commits are waiting together, and one read
        a batch rather than one an event keeps the database for the readings. The read comes
        after every event of the batch was published, so a subscription counts for an event
        as soon as it would when read for that event alone."""
        notified = [event for event in events if event.kind in NOTIFIED]
        if not notified:
            return 0
        async with self._database.read() as conn:
            active = await Subscriptions(conn).active()
        added = 0
        try:
            for event in notified:
                targets = [s.id for s in active if await self._matches(s, event)]
                if targets:
                    async with self._database.write() as conn:
                        added += await WebhookDeliveries(conn).enqueue(
                            targets, event.id, event.to_json(), self._clock(), event.patient_id
                        )
        finally:
            if added:  # those queued before a failure are delivered all the same
                self.sender.wake()
        return added

    async def _matches(self, subscription: StoredSubscription, event: Event) -> bool:
        criteria = _criteria(subscription.criteria)
        return (
            criteria is not None
            and matches(criteria, event)
            and (self._audience is None or await self._audience(subscription, event))
        )
