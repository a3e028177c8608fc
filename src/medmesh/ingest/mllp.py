"""HL7 v2 over MLLP: the listener bedside monitors and laboratories send ORU^R01 observation
messages to, and a hospital its ADT patient feed (A01/A04/A08/A28/A31 demographics, A40 merges:
`_adt`, applied by patient_feed.py and acknowledged AA, AE or AR the same way).

Each connection carries one message at a time (MLLP is request/response): the message is read
(hl7_oru.py), its devices and patient resolved, its readings and refusals committed through
the pipeline, and only then is the ACK written:

- AA: every reading stored (or already stored: a resent message is stored once);
- AE: the message was understood but some or all of its content was refused (unknown patient,
  device or code, implausible value, ...), one ERR segment each; the rest was stored;
- AR: the message was refused whole (not HL7, neither ORU^R01 nor a supported ADT event, no
  MSH-10, bad MLLP frame).

Every refusal is a dead letter (channel "mllp"). When the commit fails the connection is closed
without an ACK, so the sender sends the message again. Logs carry counts and error types only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.identity.device_certificates import CertificateRefused, DeviceTrust
from medmesh.domain.errors import Conflict, InvalidReading, RejectReason
from medmesh.domain.reading import observation_id
from medmesh.ingest.hl7_ack import AckCode, AckError, build_ack
from medmesh.ingest.hl7_adt import MERGE_EVENTS, AdtMessage, message_type, read_adt
from medmesh.ingest.hl7_oru import (
    MessageRejected,
    ObservationItem,
    OruMessage,
    field_value,
    read_oru,
)
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.mllp_guard import Admission, MllpLimits
from medmesh.ingest.mllp_sender import GATEWAY, Sender, certificate_sender
from medmesh.ingest.patient_feed import (
    AmbiguousPatient,
    SelfMerge,
    apply_demographics,
    matching_patients,
    merge_patients,
)
from medmesh.ingest.pipeline import DeviceBatch, IngestPipeline
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter
from medmesh.store.device_keys import DeviceSigningKeys
from medmesh.store.lab_corrections import replace_corrected
from medmesh.store.lab_results import LabFindings, LabResults
from medmesh.store.registry import Devices

log = logging.getLogger(__name__)

CHANNEL = "mllp"
MAX_DEAD_LETTER_PAYLOAD = 65_536
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
_CHUNK = 65_536


class _FrameError(Exception):
    """A frame that is answered with AR: `close` when the rest of the stream cannot be read."""

    def __init__(self, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.close = detail, close


class _ConnectionDone(Exception):
    """End the connection without an answer: the sender closed it, or a limit ran out."""

    def __init__(self, why: str | None = None) -> None:
        super().__init__(why)
        self.why = why


class _Frames:
    """MLLP frames off one connection, `<VT> message <FS><CR>`, holding partial frames within
    the size and memory limits and giving up on a sender that is idle or slow too long."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        admission: Admission,
        max_message_bytes: int,
    ) -> None:
        self._reader = reader
        self._admission = admission
        self._limits = admission.limits
        self._max = max_message_bytes
        self._buffer = bytearray()
        self._held = 0  # bytes of the buffer reserved in the server-wide budget
        self._scanned = 0  # bytes of the buffer known to hold no end of frame

    def _sync(self) -> None:
        self._admission.free(self._held - len(self._buffer))
        self._held = len(self._buffer)

    def release(self) -> None:
        self._buffer.clear()
        self._scanned = 0
        self._sync()

    async def next(self) -> bytes:
        loop = asyncio.get_running_loop()
        wait = self._limits.read_timeout if self._buffer else self._limits.idle_timeout
        deadline = loop.time() + wait
        while True:
            end = self._buffer.find(END_BLOCK, max(0, self._scanned - 1))
            if end >= 0:
                block = bytes(self._buffer[:end])
                del self._buffer[: end + len(END_BLOCK)]
                self._scanned = 0
                self._sync()
                if len(block) > self._max + 1:
                    raise _FrameError("message larger than the allowed size", close=True)
                if not block.startswith(START_BLOCK):
                    raise _FrameError("MLLP block does not start with <VT>")
                return block[1:]
            if len(self._buffer) > self._max + 1:
                self.release()
                raise _FrameError("message larger than the allowed size", close=True)
            self._scanned = len(self._buffer)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(self._reader.read(_CHUNK), remaining)
            except TimeoutError:
                state = "a partial message" if self._buffer else "no message"
                raise _ConnectionDone(f"timed out with {state}") from None
            if not chunk:
                raise _ConnectionDone()
            if not self._admission.reserve(len(chunk)):
                raise _ConnectionDone("partial messages hold MEDMESH_MLLP_MAX_BUFFERED_BYTES")
            if not self._buffer:  # a message starts: it has read_timeout to arrive whole
                deadline = loop.time() + self._limits.read_timeout
            self._buffer += chunk
            self._held += len(chunk)


@dataclass(frozen=True, slots=True)
class _Resolved:
    devices: dict[str, str]  # serial number -> device id, for the serials that are registered
    shared: frozenset[str]  # ids of the devices that are shared monitors
    patient_id: str | None  # None: each device's assignment decides
    patient_error: str | None  # why PID-3 named no single patient
    # Devices that must sign their readings: HL7 v2 carries no signature, so theirs are refused.
    must_sign: frozenset[str] = frozenset()


class MllpServer:
    """The MLLP listener: `start`/`stop`, or `serve` as a task."""

    def __init__(
        self,
        database: Database,
        pipeline: IngestPipeline,
        *,
        max_message_bytes: int = 1_048_576,
        limits: MllpLimits | None = None,
        application: str = "medmesh",
        device_trust: DeviceTrust | None = None,
    ) -> None:
        self._database = database
        self._device_trust = device_trust
        self._pipeline = pipeline
        self._max_message_bytes = max_message_bytes
        self._admission = Admission(limits or MllpLimits())
        self._application = application
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when started on port 0)."""
        assert self._server is not None, "the server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partial messages held now, all connections together."""
        return self._admission.buffered

    async def start(
        self, host: str = "127.0.0.1", port: int = 2575, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._stopping = False
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=self._admission.limits.read_timeout if tls else None,
        )
        log.info("MLLP listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop listening and end open connections (a message in progress is not ACKed)."""
        server, self._server, self._stopping = self._server, None, True
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:  # from Python 3.12 this waits for the connections: ended above
            await server.wait_closed()

    async def serve(
        self, host: str = "127.0.0.1", port: int = 2575, *, tls: ssl.SSLContext | None = None
    ) -> None:
        """Listen until cancelled."""
        await self.start(host, port, tls=tls)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        refusal = self._admission.admit(address)
        if refusal is not None:
            log.warning("MLLP connection from %s refused: %s", address, refusal)
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        frames = _Frames(reader, self._admission, self._max_message_bytes)
        try:
            sender = await certificate_sender(
                writer.get_extra_info("ssl_object"), self._database, self._device_trust
            )
        except CertificateRefused as refused:
            log.warning("MLLP connection from %s refused: %s", address, refused)
            sender = None
        try:
            while not self._stopping and sender is not None:
                close = False
                try:
                    block = await frames.next()
                except _FrameError as refused:
                    ack = await self._refuse_frame(refused.detail)
                    close = refused.close
                else:
                    ack = await self.answer(block, sender)
                writer.write(START_BLOCK + ack + END_BLOCK)
                await writer.drain()
                if close:
                    break
        except _ConnectionDone as done:
            if done.why:
                log.info("MLLP connection from %s closed: %s", address, done.why)
        except (ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # stop(): end quietly. (Re-raising makes asyncio's start_server log the
            # cancelled connection task as an error on Python 3.11.)
            pass
        except Exception as exc:  # a failed commit: no ACK, the sender resends
            log.error("MLLP message not stored (%s); closing the connection", type(exc).__name__)
        finally:
            frames.release()
            self._admission.release(address)
            self._connections.discard(task)
            await _close(writer)

    async def _refuse_frame(self, detail: str) -> bytes:
        letter = DeadLetter(
            datetime.now(UTC), CHANNEL, None, None, RejectReason.MALFORMED_BODY.value, detail, ""
        )
        await self._pipeline.ingest_many([], [letter])
        error = AckError(RejectReason.MALFORMED_BODY, detail, hl7_error="100")
        return self._encode(build_ack(None, AckCode.REJECT, detail, [error]))

    def _encode(self, ack: str) -> bytes:
        return ack.encode("utf-8", "surrogateescape")

    async def answer(self, block: bytes, sender: Sender = GATEWAY) -> bytes:
        """The ACK for one message (without MLLP framing), after its content is committed.
        A `sender` tied to a device by its certificate may send that device's results only."""
        text = block.decode("utf-8", "surrogateescape")
        if message_type(text)[0] == "ADT":
            if sender.device_id is not None:
                return self._encode(await self._reject(_feed_from_device(text), text))
            return self._encode(await self._adt(text))
        try:
            message = read_oru(text)
        except MessageRejected as rejected:
            return self._encode(await self._reject(rejected, text))
        resolved = await self._resolve(message)
        batches, refused, errors, sources = self._batches(message, resolved, sender)
        findings = _lab_findings(batches, sources)

        async def also(conn: AsyncConnection) -> None:
            await LabResults(conn).add_for_stored(findings)
            await replace_corrected(conn, findings)

        results = await self._pipeline.ingest_many(batches, refused, also if findings else None)
        for result, items in zip(results, sources, strict=True):
            for rejection in result.rejected:
                item = items[rejection.index]
                location = item.location(rejection.reason)
                errors.append(AckError(rejection.reason, rejection.detail, location))
        total = len(message.items)
        if errors:
            reasons = ", ".join(sorted({e.reason.value for e in errors}))
            text = f"{len(errors)} of {total} observations refused: {reasons}"
            code = AckCode.ERROR
        else:
            text, code = f"{total} observations accepted", AckCode.ACCEPT
        log.debug("MLLP %s: %d observations, %d refused", code.value, total, len(errors))
        ack = build_ack(
            message.source,
            code,
            text,
            errors,
            control_id=message.control_id,
            application=self._application,
        )
        return self._encode(ack)

    async def _adt(self, text: str) -> str:
        """A patient feed message: AA once applied, AE (with a dead letter) when understood
        but not applicable, AR for an event medmesh does not take."""
        try:
            message = read_adt(text)
        except MessageRejected as rejected:
            if rejected.reason is RejectReason.MALFORMED:
                return await self._adt_error(
                    rejected.source,
                    rejected.control_id,
                    rejected.reason,
                    rejected.detail,
                    text,
                    rejected.location,
                    rejected.hl7_error,
                )
            return await self._reject(rejected, text)
        if message.event in MERGE_EVENTS:
            return await self._merge(message, text)
        try:
            applied = await apply_demographics(self._database, message.patient)
        except (AmbiguousPatient, Conflict) as exc:
            return await self._adt_error(
                message.source,
                message.control_id,
                RejectReason.NO_PATIENT,
                str(exc),
                text,
                ("PID", 1, 3),
            )
        log.debug("MLLP ADT %s applied (created: %s)", message.event, applied.created)
        done = "patient registered" if applied.created else "patient updated"
        return build_ack(
            message.source,
            AckCode.ACCEPT,
            done,
            [],
            control_id=message.control_id,
            application=self._application,
        )

    async def _merge(self, message: AdtMessage, text: str) -> str:
        """A40: AA once merged (or when it was already), AE when it cannot be applied."""
        sender = field_value(message.source[0], 3)
        try:
            merged = await merge_patients(
                self._database,
                message.patient.identifiers,
                message.merged,
                sender=sender,
                at=datetime.now(UTC),
            )
        except SelfMerge as exc:
            return await self._adt_error(
                message.source, message.control_id, RejectReason.MALFORMED, str(exc), text,
                ("MRG", 1, 1), "204",
            )  # fmt: skip
        except (AmbiguousPatient, Conflict) as exc:
            return await self._adt_error(
                message.source, message.control_id, RejectReason.NO_PATIENT, str(exc), text,
                ("MRG", 1, 1),
            )  # fmt: skip
        done = "patients merged already" if merged.already else "patients merged"
        return build_ack(
            message.source,
            AckCode.ACCEPT,
            f"{done} (merge {merged.merge_id})",
            [],
            control_id=message.control_id,
            application=self._application,
        )

    async def _adt_error(
        self,
        source: Any,
        control_id: str,
        reason: RejectReason,
        detail: str,
        text: str,
        location: tuple[str, int, int] | None,
        hl7_error: str = "",
    ) -> str:
        letter = DeadLetter(
            datetime.now(UTC),
            CHANNEL,
            None,
            control_id[:128] or None,
            reason.value,
            detail,
            text[:MAX_DEAD_LETTER_PAYLOAD],
        )
        await self._pipeline.ingest_many([], [letter])
        error = AckError(reason, detail, location, hl7_error)
        return build_ack(
            source,
            AckCode.ERROR,
            detail,
            [error],
            control_id=control_id,
            application=self._application,
        )

    async def _reject(self, rejected: MessageRejected, text: str) -> str:
        device_id = None
        if rejected.sending_serial:
            async with self._database.read() as conn:
                device = await Devices(conn).find_by_serial_number(rejected.sending_serial)
            device_id = device.id if device is not None else None
        letter = DeadLetter(
            datetime.now(UTC),
            CHANNEL,
            device_id,
            rejected.control_id[:128] or None,
            rejected.reason.value,
            rejected.detail,
            text[:MAX_DEAD_LETTER_PAYLOAD],
        )
        await self._pipeline.ingest_many([], [letter])
        log.debug("MLLP AR: %s", rejected.reason.value)
        error = AckError(rejected.reason, rejected.detail, rejected.location, rejected.hl7_error)
        return build_ack(
            rejected.source,
            AckCode.REJECT,
            rejected.detail,
            [error],
            control_id=rejected.control_id,
            application=self._application,
        )

    async def _resolve(self, message: OruMessage) -> _Resolved:
        serials = {item.device_serial for item in message.items if item.device_serial}
        async with self._database.read() as conn:
            devices = Devices(conn)
            found = {s: await devices.find_by_serial_number(s) for s in sorted(serials)}
            patients = await matching_patients(conn, message.patient_identifiers)
            registered = {s: d.id for s, d in found.items() if d is not None}
            keys = await DeviceSigningKeys(conn).for_devices(registered.values())
        shared = frozenset(d.id for d in found.values() if d is not None and d.shared_monitor)
        if self._pipeline.signatures.required:
            must_sign = frozenset(registered.values())
        else:
            must_sign = frozenset(k.device_id for k in keys.values() if k.required)
        if not message.patient_identifiers:
            resolved = _Resolved(registered, shared, None, None)
        elif len(patients) == 1:
            resolved = _Resolved(registered, shared, patients.pop(), None)
        elif patients:
            detail = "the PID-3 identifiers match more than one patient"
            resolved = _Resolved(registered, shared, None, detail)
        else:
            detail = "no patient matches the PID-3 identifiers"
            resolved = _Resolved(registered, shared, None, detail)
        return replace(resolved, must_sign=must_sign)

    def _batches(
        self, message: OruMessage, resolved: _Resolved, sender: Sender = GATEWAY
    ) -> tuple[list[DeviceBatch], list[DeadLetter], list[AckError], list[list[ObservationItem]]]:
        """One batch per registered device; items of unknown devices become dead letters."""
        by_device: dict[str, list[ObservationItem]] = defaultdict(list)
        refused: list[DeadLetter] = []
        errors: list[AckError] = []
        now = datetime.now(UTC)

        def refuse(
            item: ObservationItem, device_id: str | None, reason: RejectReason, detail: str
        ) -> None:
            incoming = item.incoming
            letter = (incoming.message_id, reason.value, detail, incoming.payload)
            refused.append(DeadLetter(now, CHANNEL, device_id, *letter))
            errors.append(AckError(reason, detail, item.location(reason)))

        for item in message.items:
            device_id = resolved.devices.get(item.device_serial)
            if device_id is None:
                detail = "no single registered device has the OBX-18 or MSH-3 serial number"
                refuse(item, None, RejectReason.UNKNOWN_DEVICE, detail)
                continue
            if sender.device_id not in (None, device_id):
                detail = "the client certificate is another device's"
                refuse(item, None, RejectReason.DEVICE_MISMATCH, detail)
                continue
            if device_id in resolved.must_sign:
                detail = "this device must sign its readings; HL7 v2 carries no signature"
                refuse(item, device_id, RejectReason.SIGNATURE_REQUIRED, detail)
                continue
            if resolved.patient_error is not None and item.incoming.error is None:
                error = InvalidReading(RejectReason.NO_PATIENT, resolved.patient_error)
                incoming = Incoming(item.incoming.payload, item.incoming.message_id, error=error)
                item = replace(item, incoming=incoming)
            by_device[device_id].append(item)
        # A shared monitor's patient is the one PID names; any other device's is the one it is
        # assigned to, and PID, when given, must name that patient (else no-patient-assigned).
        batches = [
            DeviceBatch(
                device_id,
                CHANNEL,
                [i.incoming for i in items],
                patient_id=resolved.patient_id if device_id in resolved.shared else None,
                claimed_patient_id=None if device_id in resolved.shared else resolved.patient_id,
            )
            for device_id, items in by_device.items()
        ]
        return batches, refused, errors, list(by_device.values())


def _feed_from_device(text: str) -> MessageRejected:
    """The refusal of a patient feed (ADT) sent with a device's certificate."""
    try:
        adt = read_adt(text)
        source, control_id = adt.source, adt.control_id
    except MessageRejected as unreadable:
        source, control_id = unreadable.source, unreadable.control_id
    detail = "a device's client certificate may not send a patient feed (ADT)"
    return MessageRejected(RejectReason.DEVICE_MISMATCH, detail, "207", source, control_id)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
        await writer.wait_closed()


def _lab_findings(
    batches: Sequence[DeviceBatch], sources: Sequence[Sequence[ObservationItem]]
) -> dict[str, LabFindings]:
    """A laboratory's reference ranges and flags, by the id each result is stored under."""
    found = {}
    for batch, items in zip(batches, sources, strict=True):
        for item in items:
            if item.findings is not None and item.incoming.message_id is not None:
                found[observation_id(batch.device_id, item.incoming.message_id)] = item.findings
    return found
