"""The sender: claims due deliveries, builds and signs each notification, POSTs it over verified
TLS, and records what happened (delivered, retry later with backoff, or failed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
import orjson

import medmesh
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.subscription import InvalidSubscription, check_endpoint, parse_criteria
from medmesh.events.model import ALERT, MESSAGE, READINGS, REFILL, Event
from medmesh.fhir import resources
from medmesh.fhir.notification import Change, Pointer, flag_from_alert, notification_bundle
from medmesh.http.responses import FHIR_JSON
from medmesh.store.database import Database
from medmesh.store.observations import Observations
from medmesh.store.subscriptions import ACTIVE, ERROR, StoredSubscription, Subscriptions
from medmesh.store.webhook_deliveries import FAILED, Delivery, WebhookDeliveries
from medmesh.webhooks.policy import WebhookPolicy
from medmesh.webhooks.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SUBSCRIPTION_ID_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from medmesh.workers import wait_for_wake

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["delivered", "retry", "failed", "cancelled"]
    error: str = ""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verification always on: the system's CAs, plus `ca_file`."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def wants_resources(subscription: StoredSubscription) -> bool:
    channel = subscription.resource.get("channel") or {}
    return bool(channel.get("payload") == FHIR_JSON)


def _network_error(exc: BaseException) -> str:
    """What went wrong, for last_error: the kind of failure, never the request or its URL."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or type(cause).__name__}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return f"network error ({type(exc).__name__})"


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookSender:
    """Delivers pending webhooks, at most `policy.concurrency` at a time, each bounded by
    `policy.timeout_seconds`, so a dead endpoint costs its own deliveries time, not others'."""

    def __init__(
        self, database: Database, policy: WebhookPolicy, clock: Callable[[], datetime] = _now
    ) -> None:
        self._database = database
        self._policy = policy
        self._clock = clock
        self._wake = asyncio.Event()
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.Task[None] | None = None
        self._jitter = random.SystemRandom()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            verify=tls_context(self._policy.ca_file),
            timeout=httpx.Timeout(self._policy.timeout_seconds),
            limits=httpx.Limits(max_connections=self._policy.concurrency),
            follow_redirects=False,
            trust_env=False,  # settings come from Settings, not the environment
            headers={"User-Agent": f"medmesh/{medmesh.__version__}"},
        )
        self._loop = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop sending. Deliveries cut short stay leased and are retried when the lease ends."""
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were queued)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._step()
            except Exception as exc:  # the database may be away for a while; keep going
                log.error("webhook sender could not claim deliveries (%s)", type(exc).__name__)
                delay = self._policy.poll_seconds
            if delay > 0:
                await wait_for_wake(self._wake, delay)

    def _free_slots(self) -> int:
        return self._policy.concurrency - sum(self._in_flight.values())

    async def _step(self) -> float:
        """Start the deliveries that are due; return how long to wait before looking again."""
        poll = self._policy.poll_seconds
        free = self._free_slots()
        if free <= 0:
            return poll  # a finishing delivery wakes the loop
        async with self._database.read() as conn:
            due = await WebhookDeliveries(conn).next_due()
        now = self._clock()
        if due is None:
            return poll
        if due > now:
            return min((due - now).total_seconds(), poll)
        async with self._database.write() as conn:
            claimed = await WebhookDeliveries(conn).claim(
                now, now + self._policy.lease, free, self._in_flight, self._policy.per_subscription
            )
        for delivery in claimed:
            key = delivery.subscription_id
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
        # Nothing claimed although something is due: those rows wait for a busy subscription or
        # are being claimed by another process.
        return 0.0 if claimed else poll

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            try:
                outcome = await self._attempt(delivery)
            except Exception as exc:  # counted as an attempt, so it cannot recur forever
                log.error("webhook delivery %d: %s", delivery.id, type(exc).__name__)
                outcome = Outcome("retry", f"internal error ({type(exc).__name__})")
            await self._record(delivery, outcome)
        except Exception as exc:  # could not record it: the lease runs out, it is tried again
            log.error("webhook delivery %d not recorded: %s", delivery.id, type(exc).__name__)
        finally:
            key = delivery.subscription_id
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._wake.set()

    async def _attempt(self, delivery: Delivery) -> Outcome:
        async with self._database.read() as conn:
            subscription = await Subscriptions(conn).find(delivery.subscription_id)
            if subscription is None or subscription.status != ACTIVE:
                status = subscription.status if subscription is not None else "gone"
                return Outcome("cancelled", f"subscription is {status}")
            try:
                event = Event.from_json(await WebhookDeliveries(conn).event_of(delivery))
            except DataKeyDestroyed:
                return Outcome("cancelled", "the patient was erased")
            changes = await _changes(Observations(conn), subscription, event)
            number = await WebhookDeliveries(conn).event_number(delivery)
        try:
            url = check_endpoint(subscription.endpoint)  # again: never send in clear
        except InvalidSubscription as exc:
            return Outcome("failed", f"endpoint refused: {exc}")
        now = self._clock()
        body = orjson.dumps(notification_bundle(subscription.id, number, event.at, changes, now))
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": FHIR_JSON,
            EVENT_ID_HEADER: event.id,
            SUBSCRIPTION_ID_HEADER: subscription.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(subscription.signing_secret, timestamp, body),
        }
        return await self._post(url, body, headers)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        assert self._client is not None
        limit = self._policy.timeout_seconds
        try:
            async with asyncio.timeout(limit):
                # Streamed and not read: a receiver's answer body is not ours to hold.
                async with self._client.stream("POST", url, content=body, headers=headers) as r:
                    status = r.status_code
        except (TimeoutError, httpx.TimeoutException):
            return Outcome("retry", f"no response within {limit:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return Outcome("retry", _network_error(exc))
        if 200 <= status < 300:
            return Outcome("delivered")
        if status == 429 or status >= 500:
            return Outcome("retry", f"HTTP {status}")
        note = "" if status >= 400 else " (redirects are not followed)"
        return Outcome("failed", f"HTTP {status}{note}")

    async def _record(self, delivery: Delivery, outcome: Outcome) -> None:
        now = self._clock()
        policy = self._policy
        async with self._database.write() as conn:
            deliveries = WebhookDeliveries(conn)
            if outcome.kind == "delivered":
                await deliveries.delivered(delivery, now)
                return
            if outcome.kind == "retry" and delivery.attempts < policy.max_attempts:
                wait = policy.retry_delay(delivery.attempts, self._jitter.random())
                await deliveries.retry_at(delivery, now + wait, outcome.error)
                log.info(
                    "webhook delivery %d attempt %d failed (%s); retry in %.0f s",
                    delivery.id,
                    delivery.attempts,
                    outcome.error,
                    wait.total_seconds(),
                )
                return
            if not await deliveries.failed(delivery, outcome.error) or outcome.kind == "cancelled":
                return
            log.warning("webhook delivery %d failed: %s", delivery.id, outcome.error)
            latest = await deliveries.latest_outcomes(
                delivery.subscription_id, policy.failures_before_error
            )
            if len(latest) == policy.failures_before_error and all(s == FAILED for s in latest):
                reason = f"{len(latest)} deliveries in a row failed; last: {outcome.error}"
                if await Subscriptions(conn).set_status(delivery.subscription_id, ERROR, reason):
                    await deliveries.cancel_pending(delivery.subscription_id, "subscription error")
                    log.warning("subscription %s is in error", delivery.subscription_id)


async def _changes(
    observations: Observations, subscription: StoredSubscription, event: Event
) -> list[Change | Pointer]:
    """The resources of the event the notification carries (none unless asked for)."""
    if not wants_resources(subscription):
        return []
    if event.kind == READINGS:
        codes = parse_criteria(subscription.criteria).codes
        ids = event.data.get("observations")
        if not isinstance(ids, list):
            return []  # an event too large to carry its ids: an empty notification
        found = await observations.get_many([str(i) for i in ids])
        observed: list[Change | Pointer] = [
            Change(resources.observation(o), "POST")
            for o in found
            if o.patient_id == event.patient_id and (not codes or o.code in codes)
        ]
        return observed
    if event.kind == ALERT:
        flag = flag_from_alert({"patient_id": event.patient_id, **event.data})
        return [Change(flag, "PUT")] if flag is not None else []
    return _care_pointers(event)


def _care_pointers(event: Event) -> list[Change | Pointer]:
    """Care events name what changed by id, never its content ("something is waiting")."""
    data = event.data
    if event.kind == REFILL and data.get("renewal_id"):
        return [
            Pointer("MedicationRequest", str(data["renewal_id"]), "POST"),
            Pointer("MedicationRequest", str(data["medication_id"]), "PUT"),  # now completed
        ]
    if event.kind == MESSAGE and data.get("message_id"):
        return [Pointer("Communication", str(data["message_id"]), "POST")]
    return []
