"""Signed readings: a device holding an Ed25519 key signs the exact bytes it sends, with a
timestamp and a nonce; medmesh checks the signature, the time and the nonce before anything is
stored (docs/signed-payloads.md).

    Medmesh-Signature: keyid=<16 hex>, ts=<unix seconds>, nonce=<16-64 of A-Z a-z 0-9 _ ->,
                       sig=<base64 Ed25519 signature of the signed message>

    signed message = "medmesh-signature/1\\n" device id "\\n" ts "\\n" nonce "\\n"
                     lowercase hex SHA-256 of the body

Over HTTP the value is a request header; over MQTT the payload is an envelope
`{"medmesh-signature": "<the same value>", "payload": "<base64 of the exact bytes>"}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medmesh.domain.errors import InvalidReading, RejectReason, SignatureRefused
from medmesh.ingest.known_signing_keys import KnownSigningKeys
from medmesh.store.database import Database
from medmesh.store.device_keys import DeviceSigningKey, DeviceSigningKeys, SignatureNonces

HEADER = "Medmesh-Signature"
ENVELOPE_FIELD = "medmesh-signature"
ENVELOPE_PAYLOAD = "payload"
MESSAGE_PREFIX = "medmesh-signature/1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_HEADER = 512


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """`required`: every device must sign (the organisation's policy), besides the devices
    marked one by one. `max_skew`: how far a signature's time may be from the server's, either
    way; a nonce is remembered for as long as its signature could be accepted."""

    required: bool = False
    max_skew: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Signature:
    key_id: str
    timestamp: int
    nonce: str
    value: bytes


@dataclass(frozen=True, slots=True)
class CheckedSignature:
    """A signature that verified: its nonce is to be recorded with the readings."""

    device_id: str
    nonce: str
    expires_at: datetime


def signed_message(device_id: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The bytes a device signs."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{MESSAGE_PREFIX}\n{device_id}\n{timestamp}\n{nonce}\n{digest}".encode("ascii")


def _malformed(detail: str) -> InvalidReading:
    reason = RejectReason.SIGNATURE_MALFORMED
    return InvalidReading(reason, f"{reason.value}: {HEADER}: {detail}")


def parse_signature(text: str) -> Signature:
    """Parse a `Medmesh-Signature` value; InvalidReading (signature-malformed) if it is not one."""
    if len(text) > _MAX_HEADER or not text.isascii():
        raise _malformed("too long or not ASCII")
    fields: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise _malformed("expected keyid=…, ts=…, nonce=…, sig=… each once")
        fields[name] = value.strip()
    if set(fields) != {"keyid", "ts", "nonce", "sig"}:
        raise _malformed("expected exactly the fields keyid, ts, nonce and sig")
    if not _KEY_ID.fullmatch(fields["keyid"]):
        raise _malformed("keyid is 16 lowercase hex digits")
    if not fields["ts"].isdigit() or len(fields["ts"]) > 12:
        raise _malformed("ts is the signing time in whole seconds since 1970 (UTC)")
    if not _NONCE.fullmatch(fields["nonce"]):
        raise _malformed("nonce is 16 to 64 characters of A-Z a-z 0-9 _ -")
    try:
        raw = base64.b64decode(fields["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("sig is not base64") from None
    if len(raw) != 64:
        raise _malformed("sig is not an Ed25519 signature (64 bytes)")
    return Signature(fields["keyid"], int(fields["ts"]), fields["nonce"], raw)


def check_signature(
    device_id: str,
    text: str | None,
    body: bytes,
    key: DeviceSigningKey | None,
    policy: SignaturePolicy,
    now: datetime,
) -> CheckedSignature | None:
    """Check a reading's signature (not yet its nonce). None: unsigned and allowed to be.
    Raises SignatureRefused or InvalidReading (malformed) with the reason."""
    if text is None:
        if policy.required or (key is not None and key.required):
            raise SignatureRefused(
                RejectReason.SIGNATURE_REQUIRED,
                f"this device must sign its readings ({HEADER}, docs/signed-payloads.md)",
            )
        return None
    signature = parse_signature(text)
    if key is None or signature.key_id != key.key_id:
        raise SignatureRefused(
            RejectReason.SIGNATURE_KEY_UNKNOWN, "the keyid is not this device's registered key"
        )
    skew = int(policy.max_skew.total_seconds())
    age = int(now.timestamp()) - signature.timestamp
    if age > skew:
        raise SignatureRefused(
            RejectReason.SIGNATURE_STALE, f"signed {age} s ago; at most {skew} s are accepted"
        )
    if -age > skew:
        raise SignatureRefused(
            RejectReason.SIGNATURE_FUTURE,
            f"signed {-age} s ahead of the server clock; at most {skew} s are accepted",
        )
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(
            signature.value, signed_message(device_id, signature.timestamp, signature.nonce, body)
        )
    except InvalidSignature:
        raise SignatureRefused(
            RejectReason.SIGNATURE_INVALID,
            "the signature does not match the body, time and nonce with this device's key",
        ) from None
    expires = datetime.fromtimestamp(signature.timestamp, now.tzinfo) + policy.max_skew
    return CheckedSignature(device_id, signature.nonce, expires)


def replayed(nonce: str) -> SignatureRefused:
    del nonce  # never echoed: a nonce is the device's, and says nothing to a reader
    return SignatureRefused(
        RejectReason.SIGNATURE_REPLAYED, "this nonce was used already; sign each message afresh"
    )


@dataclass(frozen=True, slots=True)
class SigningKeySeen:
    """The device's signing key a batch's signature was checked against (None: it had none).
    The storing transaction stores the batch only if that is still the device's key."""

    key: DeviceSigningKey | None


async def check_request(
    database: Database,
    known: KnownSigningKeys | None,
    device_id: str,
    text: str | None,
    body: bytes,
    policy: SignaturePolicy,
    now: datetime,
) -> tuple[SigningKeySeen, CheckedSignature | None]:
    """The HTTP path: check a request's signature against the device's key, as this process
    last read it when it has (`known`). A refusal is never decided on a remembered key: the
    key is read again first."""
    if known is not None:
        remembered, key = known.lookup(device_id)
        if remembered:
            try:
                return SigningKeySeen(key), check_signature(device_id, text, body, key, policy, now)
            except SignatureRefused:
                known.forget(device_id)
    async with database.read() as conn:
        key = await DeviceSigningKeys(conn).get(device_id)
    if known is not None:
        known.remember(device_id, key)
    return SigningKeySeen(key), check_signature(device_id, text, body, key, policy, now)


async def record_nonce(database: Database, checked: CheckedSignature, now: datetime) -> None:
    """Record a checked signature's nonce in a transaction of its own, before its readings are
    stored (a retried request is signed afresh, so a recorded nonce is never needed again);
    SignatureRefused (replayed) if it was recorded before."""
    async with database.write() as conn:
        new = await SignatureNonces(conn).record(
            [(checked.device_id, checked.nonce, checked.expires_at)], now
        )
    if not new:
        raise replayed(checked.nonce)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An MQTT payload that carries its signature: the value and the exact signed bytes."""

    signature: str
    payload: bytes


def open_envelope(body: bytes) -> Envelope | None:
    """The envelope, if the MQTT payload is one; None for a plain payload. InvalidReading
    (signature-malformed) for an envelope that is not well formed."""
    if ENVELOPE_FIELD.encode() not in body:
        return None  # cheap for plain payloads: no JSON parse
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or ENVELOPE_FIELD not in document:
        return None
    signature, payload = document.get(ENVELOPE_FIELD), document.get(ENVELOPE_PAYLOAD)
    if not isinstance(signature, str) or not isinstance(payload, str) or len(document) != 2:
        raise _malformed('an envelope is {"medmesh-signature": "…", "payload": "<base64>"}')
    try:
        return Envelope(signature, base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        raise _malformed("the envelope's payload is not base64") from None
