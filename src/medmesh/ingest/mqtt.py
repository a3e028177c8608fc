"""MQTT ingest through a real broker, with aiomqtt.

Topics (`{device}` is the device id, which is also its broker user name):

    medmesh/v1/devices/{device}/readings            native JSON batch
    medmesh/v1/devices/{device}/readings/{format}   another registered format (e.g. omh)
    medmesh/v1/devices/{device}/status              battery, firmware, online (and last will)

Delivery is QoS 1 with manual acknowledgement: a PUBACK is sent only after the message's
readings (or its dead letter) are committed. A worker that dies before that leaves the message
unacknowledged in its persistent session, and the broker delivers it again on reconnect; the
(device, message id) dedupe keeps the reading single. Two micro-batches are stored at once (one
is read and parsed while the other commits); PUBACKs still go in the order received, and a
status report is stored only after everything received before it. Several workers share the
load through an MQTT 5 shared subscription (`$share/{group}/…`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import InvalidReading, RejectReason, SignatureRefused
from medmesh.ingest.formats import NATIVE, Formats
from medmesh.ingest.paho_properties import share_property_tables
from medmesh.ingest.pipeline import DeviceBatch, IngestPipeline
from medmesh.ingest.signed_readings import (
    CheckedSignature,
    check_signature,
    open_envelope,
    replayed,
)
from medmesh.ingest.status import parse_status
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter
from medmesh.store.device_keys import DeviceSigningKeys, SignatureNonces
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.registry import Devices

log = logging.getLogger(__name__)

TOPIC_ROOT = "medmesh/v1/devices"
READINGS_FILTER = f"{TOPIC_ROOT}/+/readings/#"
STATUS_FILTER = f"{TOPIC_ROOT}/+/status"
MAX_DEAD_LETTER_PAYLOAD = 65_536
MAX_DEVICE_ID_LENGTH = 36  # device ids are UUIDs
TRANSIENT_RETRIES = 3
# Micro-batches being stored at once. Their PUBACKs still go in the order received (MQTT
# requires it); while one commits, the next ones are read, parsed and stored. With two, both
# often waited on the database with the worker idle (docs/mqtt.md).
IN_FLIGHT = 3
# PostgreSQL SQLSTATEs worth retrying whole: deadlock, serialization failure.
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


# SQLSTATE classes of the database's own trouble, not of a message: connection exception,
# insufficient resources (disk full, too many connections), operator intervention (shutting
# down, restarting), system error.
_OUTAGE_SQLSTATE_CLASSES = {"08", "53", "57", "58"}


def _is_outage(exc: BaseException) -> bool:
    """The database is unreachable, full or going away: no message is to blame, so none may be
    dead-lettered (the broker redelivers them once the database is back)."""
    if isinstance(exc, OSError | OperationalError | InterfaceError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return exc.connection_invalidated or str(sqlstate or "")[:2] in _OUTAGE_SQLSTATE_CLASSES


def _is_transient(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate in _TRANSIENT_SQLSTATES or "database is locked" in str(exc.orig)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str = "medmesh-ingest"
    shared_group: str | None = "medmesh-ingest"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    max_batch: int = 1000  # messages per transaction
    max_batch_bytes: int = 256 * 1024  # payload bytes per transaction (about 2,500 readings)
    session_expiry_seconds: int = 3600


@dataclass(frozen=True, slots=True)
class _Storing:
    """A micro-batch being stored, acknowledged once `task` has stored it."""

    messages: list[aiomqtt.Message]
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class Topic:
    device_id: str
    kind: str  # "readings" or "status"
    format: str


def parse_topic(topic: str) -> Topic | None:
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != TOPIC_ROOT or not parts[3]:
        return None
    device_id, kind, rest = parts[3], parts[4], parts[5:]
    if len(device_id) > MAX_DEVICE_ID_LENGTH or not device_id.isprintable():
        return None
    if kind == "readings":
        return Topic(device_id, kind, "/".join(rest) if rest else NATIVE)
    if kind == "status" and not rest:
        return Topic(device_id, kind, "status")
    return None


def _is_status(message: aiomqtt.Message) -> bool:
    topic = parse_topic(message.topic.value)
    return topic is not None and topic.kind == "status"


def _payload_bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""


class MqttIngest:
    """One ingest worker: subscribes, commits micro-batches, acknowledges after commit."""

    def __init__(
        self, settings: MqttSettings, database: Database, pipeline: IngestPipeline, formats: Formats
    ) -> None:
        self._settings = settings
        self._database = database
        self._pipeline = pipeline
        self._formats = formats
        share_property_tables()  # a quarter of the worker's CPU otherwise (paho_properties)
        self._known_devices: set[str] = set()
        self.processed = 0
        self.connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._waiting: asyncio.Future[aiomqtt.Message] | None = None
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> aiomqtt.Client:
        s = self._settings
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_seconds
        # Lets the broker send whole micro-batches, as many as are stored at once.
        properties.ReceiveMaximum = s.max_batch * IN_FLIGHT
        tls = None
        if s.ca_file or s.cert_file:
            tls = aiomqtt.TLSParameters(
                ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file
            )
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # keep the session: unacknowledged messages come back
            properties=properties,
            tls_params=tls,
        )

    async def run(self) -> None:
        """Consume until stopped, reconnecting after broker or database failures: 0.5 s after
        the first, doubling up to 10 s while they go on, and back to 0.5 s once a connection
        has held (after a broker restart the devices reconnect within a second or two, and
        what they publish before a worker has subscribed again may be dropped by the broker)."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._consume()
            except (aiomqtt.MqttError, OSError) as exc:
                # Connection-level errors (refused, lost, not authorised): no message content.
                log.warning(
                    "MQTT ingest disconnected (%s: %s); reconnecting", type(exc).__name__, exc
                )
            except Exception as exc:  # a failed commit: drop the session's unacked messages
                log.error("MQTT ingest batch failed (%s); reconnecting", type(exc).__name__)
            held = self.connected.is_set()
            self.connected.clear()
            if held:
                delay = 0.5
            if not self._stopping.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def start(self) -> None:
        """Consume in a task of its own (`run`) until `stop`."""
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="medmesh-mqtt-ingest")

    async def stop(self) -> None:
        """Stop after the batches in hand are committed and acknowledged (never between the two),
        and leave the shared subscription first, so the broker gives this worker's share to
        the others instead of keeping it for a worker that may not come back."""
        self._stopping.set()
        if self._waiting is not None:
            self._waiting.cancel()
        task, self._task = self._task, None
        if task is not None:
            # A commit that hangs (database gone) is given up on: its messages stay
            # unacknowledged and the broker delivers them again.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)

    async def _consume(self) -> None:
        s = self._settings
        prefix = f"$share/{s.shared_group}/" if s.shared_group else ""
        filters = [prefix + READINGS_FILTER, prefix + STATUS_FILTER]
        client = self._client()
        # aiomqtt has no manual-ack switch; paho (its engine) does. PUBACK is ours to send.
        # Switched on before connecting: a resumed session's unacknowledged messages arrive
        # right after CONNACK, and paho would acknowledge them itself before they are stored.
        paho = client._client
        paho.manual_ack_set(True)
        async with client:
            for topic_filter in filters:
                await client.subscribe(topic_filter, qos=1)
            self.connected.set()
            log.info("MQTT ingest subscribed as %s", s.client_id)
            messages = client.messages
            storing: deque[_Storing] = deque()
            try:
                while (first := await self._next_message(messages, storing, paho)) is not None:
                    pending = [first]
                    size = len(_payload_bytes(first))
                    # Bounded by count and by bytes (≈ readings), so one transaction stays
                    # short and a critical reading never waits behind tens of thousands.
                    while (
                        len(messages) > 0
                        and len(pending) < s.max_batch
                        and size < s.max_batch_bytes
                    ):
                        message = await anext(messages)
                        pending.append(message)
                        size += len(_payload_bytes(message))
                    # A status report is stored after everything received before it, so a
                    # device's reports are never stored out of order.
                    if len(storing) >= IN_FLIGHT or any(_is_status(m) for m in pending):
                        while storing:
                            await self._acknowledge(paho, storing.popleft())
                    task = asyncio.create_task(self._process_isolating_poison(pending))
                    storing.append(_Storing(pending, task))
                while storing:  # stopping: what is in hand is stored and acknowledged first
                    await self._acknowledge(paho, storing.popleft())
            finally:
                # Leaving on an error: what is still being stored is not acknowledged (the
                # broker delivers it again, and the dedupe keeps its readings single).
                for left in storing:
                    left.task.cancel()
                for left in storing:
                    with contextlib.suppress(BaseException):
                        await left.task
            if s.shared_group:
                for topic_filter in filters:
                    await client.unsubscribe(topic_filter)

    async def _next_message(
        self,
        messages: AsyncIterator[aiomqtt.Message],
        storing: deque[_Storing],
        paho: Any,
    ) -> aiomqtt.Message | None:
        """The next message, acknowledging meanwhile each micro-batch stored, in the order
        received; None once stopping."""
        if self._stopping.is_set():
            return None
        waiting = self._waiting = asyncio.ensure_future(anext(messages))
        try:
            while not waiting.done():
                if storing and storing[0].task.done():
                    await self._acknowledge(paho, storing.popleft())
                    continue
                oldest = {storing[0].task} if storing else set()
                await asyncio.wait({waiting, *oldest}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            waiting.cancel()
            raise
        finally:
            self._waiting = None
        if waiting.cancelled():
            if self._stopping.is_set():
                return None
            raise asyncio.CancelledError
        return waiting.result()

    async def _acknowledge(self, paho: Any, stored: _Storing) -> None:
        """PUBACK a micro-batch once it is stored; if storing it failed, this raises and
        nothing of it, or received after it, is acknowledged."""
        await stored.task
        for message in stored.messages:
            if message.qos > 0:
                paho.ack(message.mid, message.qos)
        self.processed += len(stored.messages)

    async def _process_isolating_poison(self, messages: Sequence[aiomqtt.Message]) -> None:
        """Process a micro-batch; if it cannot be stored, find the message that breaks it.

        Without this, a message the database refuses would come back after every reconnect
        and block the queue for good. Each message is retried alone; one that still fails is
        dead-lettered (reason storage-error) so the rest can be acknowledged. If even that
        fails, the database is down: the error propagates, nothing is acknowledged, and the
        broker redelivers later.
        """
        try:
            await self._process_retrying(messages)
            return
        except Exception as exc:
            if _is_outage(exc) or (
                isinstance(exc, SQLAlchemyError) and not isinstance(exc, DBAPIError)
            ):
                raise  # not about the data (e.g. a closed pool): retry after reconnecting
            if len(messages) == 1:
                if not await self._dead_letter_unstorable(messages[0]):
                    raise
                return
        for message in messages:
            try:
                await self._process_retrying([message])
            except Exception as exc:  # whatever breaks one message must not block the queue
                if _is_outage(exc):
                    raise  # the database failed meanwhile: this message is not to blame
                log.error("an MQTT message could not be processed (%s)", type(exc).__name__)
                if not await self._dead_letter_unstorable(message):
                    raise

    async def _process_retrying(self, messages: Sequence[aiomqtt.Message]) -> None:
        """`process`, retried a few times on deadlocks and serialization failures, which are
        about timing between workers, not about the data."""
        for attempt in range(1, TRANSIENT_RETRIES + 1):
            try:
                await self.process(messages)
                return
            except DBAPIError as exc:
                if not _is_transient(exc) or attempt == TRANSIENT_RETRIES:
                    raise
                log.warning("MQTT batch hit a transient database conflict; retrying")
                await asyncio.sleep(0.05 * attempt)

    async def _dead_letter_unstorable(self, message: aiomqtt.Message) -> bool:
        topic = parse_topic(message.topic.value)
        letter = DeadLetter(
            datetime.now(UTC),
            "mqtt",
            None,  # the topic may be what the database refused
            None,
            RejectReason.STORAGE_ERROR.value,
            "the message could not be stored",
            _payload_bytes(message)[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", "surrogateescape"),
        )
        try:
            await self._pipeline.ingest_many([], [letter])
        except SQLAlchemyError:
            return False
        log.error(
            "dead-lettered an MQTT message the database refused (device topic: %s)",
            "yes" if topic else "no",
        )
        return True

    async def _is_known(self, device_ids: set[str]) -> set[str]:
        unknown = device_ids - self._known_devices
        if unknown:
            async with self._database.read() as conn:
                found = await Devices(conn).existing_ids(list(unknown))
            self._known_devices |= found
        return device_ids & self._known_devices

    async def process(self, messages: Sequence[aiomqtt.Message]) -> None:
        """Store a micro-batch of messages: readings, status reports and dead letters."""
        now = datetime.now(UTC)
        topics = [parse_topic(m.topic.value) for m in messages]
        known = await self._is_known({t.device_id for t in topics if t is not None})
        batches: list[DeviceBatch] = []
        refused: list[DeadLetter] = []
        reports = []

        def refuse(device_id: str | None, reason: RejectReason, detail: str, body: bytes) -> None:
            payload = body[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", "surrogateescape")
            refused.append(DeadLetter(now, "mqtt", device_id, None, reason.value, detail, payload))

        async with self._database.read() as conn:
            keys = await DeviceSigningKeys(conn).for_devices(known)
        signed: list[tuple[CheckedSignature, DeviceBatch, bytes]] = []
        policy = self._pipeline.signatures
        for message, topic in zip(messages, topics, strict=True):
            body = _payload_bytes(message)
            if topic is None:
                refuse(
                    None, RejectReason.UNKNOWN_TOPIC, "topic is not a medmesh device topic", body
                )
                continue
            if topic.device_id not in known:
                refuse(topic.device_id, RejectReason.UNKNOWN_DEVICE, "no such device", body)
                continue
            try:
                if topic.kind == "status":
                    reports.append((topic.device_id, parse_status(body), not message.retain))
                    continue
                # Signed readings come in an envelope (docs/signed-payloads.md).
                envelope = open_envelope(body)
                text, payload = (
                    (None, body) if envelope is None else (envelope.signature, envelope.payload)
                )
                checked = check_signature(
                    topic.device_id, text, payload, keys.get(topic.device_id), policy, now
                )
                items = self._formats.parse(topic.format, payload, topic.device_id)
                batch = DeviceBatch(topic.device_id, "mqtt", items)
                if checked is None:
                    batches.append(batch)
                else:
                    signed.append((checked, batch, body))
            except (InvalidReading, SignatureRefused) as exc:
                refuse(topic.device_id, exc.reason, exc.message, body)

        fresh = await self._fresh(signed, now, refuse)
        batches.extend(batch for _, batch, _ in fresh)

        async def record_statuses(conn: AsyncConnection) -> None:
            statuses = DeviceStatuses(conn)
            for device_id, report, live in sorted(reports, key=lambda r: r[0]):  # lock order
                await statuses.report(
                    device_id,
                    now,
                    online=report.online,
                    battery_percent=report.battery_percent,
                    firmware=report.firmware,
                    live=live,
                )

        async def record(conn: AsyncConnection) -> None:
            # In the readings' transaction: a message the broker delivers again because its
            # PUBACK was lost finds its nonce only if its readings were stored too.
            await SignatureNonces(conn).record(
                [(c.device_id, c.nonce, c.expires_at) for c, _, _ in fresh], now
            )
            if reports:
                await record_statuses(conn)

        await self._pipeline.ingest_many(
            batches, refused, also=record if reports or fresh else None
        )

    async def _fresh(
        self,
        signed: Sequence[tuple[CheckedSignature, DeviceBatch, bytes]],
        now: datetime,
        refuse: Callable[[str | None, RejectReason, str, bytes], None],
    ) -> list[tuple[CheckedSignature, DeviceBatch, bytes]]:
        """Those signed messages whose nonce was not seen before; the others are refused as
        replays (a nonce twice in one micro-batch too)."""
        if not signed:
            return []
        pairs = [(c.device_id, c.nonce) for c, _, _ in signed]
        async with self._database.read() as conn:
            seen = await SignatureNonces(conn).seen(pairs, now)
        fresh = []
        for checked, batch, body in signed:
            pair = (checked.device_id, checked.nonce)
            if pair in seen:
                exc = replayed(checked.nonce)
                refuse(checked.device_id, exc.reason, exc.message, body)
            else:
                seen.add(pair)
                fresh.append((checked, batch, body))
        return fresh
