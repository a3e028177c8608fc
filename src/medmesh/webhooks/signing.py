"""Signatures of webhook notifications: HMAC-SHA256, keyed with the subscription's signing
secret, over `<timestamp>.<body>`, so a receiver can check who sent a body and refuse replays."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Medmesh-Signature"
TIMESTAMP_HEADER = "X-Medmesh-Timestamp"
EVENT_ID_HEADER = "X-Medmesh-Event-Id"
SUBSCRIPTION_ID_HEADER = "X-Medmesh-Subscription-Id"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Medmesh-Signature value: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    sent = int(timestamp)
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, sent, body), signature_header)
