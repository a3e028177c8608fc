"""The signature format of signed readings (docs/signed-payloads.md): parsing, time, keys."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medmesh.crypto.public_keys import ed25519_public_key
from medmesh.domain.errors import InvalidReading, RejectReason, SignatureRefused
from medmesh.ingest.signed_readings import (
    SignaturePolicy,
    check_signature,
    open_envelope,
    parse_signature,
    signed_message,
)
from medmesh.store.device_keys import DeviceSigningKey, key_id_of

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PRIVATE = Ed25519PrivateKey.generate()
PUBLIC = PRIVATE.public_key().public_bytes_raw()
KEY = DeviceSigningKey("dev-1", PUBLIC, key_id_of(PUBLIC), required=False)


def header(
    body: bytes, *, ts: int | None = None, nonce: str = "n" * 22, device: str = "dev-1"
) -> str:
    ts = int(NOW.timestamp()) if ts is None else ts
    sig = base64.b64encode(PRIVATE.sign(signed_message(device, ts, nonce, body))).decode()
    return f"keyid={KEY.key_id}, ts={ts}, nonce={nonce}, sig={sig}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "keyid=abc",
        "keyid=0123456789abcdef, ts=1, nonce=" + "n" * 22 + ", sig=AAAA, extra=1",
        "keyid=0123456789ABCDEF, ts=1, nonce=" + "n" * 22 + ", sig=AAAA",
        "keyid=0123456789abcdef, ts=-1, nonce=" + "n" * 22 + ", sig=AAAA",
        "keyid=0123456789abcdef, ts=1, nonce=short, sig=AAAA",
        "keyid=0123456789abcdef, ts=1, nonce=" + "n" * 22 + ", sig=not base64!",
        "keyid=0123456789abcdef, ts=1, nonce=" + "n" * 22 + ", sig=AAAA",  # 3 bytes
        "keyid=0123456789abcdef, keyid=0123456789abcdef, ts=1, nonce=x, sig=AAAA",
    ],
)
def test_a_malformed_header_is_refused_with_a_reason_that_names_it(text: str) -> None:
    with pytest.raises(InvalidReading) as refused:
        parse_signature(text)
    assert refused.value.reason is RejectReason.SIGNATURE_MALFORMED
    assert str(refused.value).startswith("signature-malformed: Medmesh-Signature: ")


def test_a_good_signature_passes_and_its_nonce_expires_after_the_skew() -> None:
    checked = check_signature("dev-1", header(b"{}"), b"{}", KEY, SignaturePolicy(), NOW)
    assert checked is not None
    assert checked.expires_at == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("text", "body", "reason"),
    [
        (header(b"{}"), b"{ }", RejectReason.SIGNATURE_INVALID),
        (header(b"{}", device="dev-2"), b"{}", RejectReason.SIGNATURE_INVALID),
        (header(b"{}", ts=int(NOW.timestamp()) - 301), b"{}", RejectReason.SIGNATURE_STALE),
        (header(b"{}", ts=int(NOW.timestamp()) + 301), b"{}", RejectReason.SIGNATURE_FUTURE),
        (None, b"{}", RejectReason.SIGNATURE_REQUIRED),
    ],
)
def test_refusals_carry_their_reason(text: str | None, body: bytes, reason: RejectReason) -> None:
    policy = SignaturePolicy(required=True)
    with pytest.raises(SignatureRefused) as refused:
        check_signature("dev-1", text, body, KEY, policy, NOW)
    assert refused.value.reason is reason
    assert str(refused.value).startswith(f"{reason.value}: ")


def test_unsigned_readings_pass_unless_the_device_or_the_organisation_requires_them() -> None:
    assert check_signature("dev-1", None, b"{}", KEY, SignaturePolicy(), NOW) is None
    assert check_signature("dev-1", None, b"{}", None, SignaturePolicy(), NOW) is None
    required = DeviceSigningKey("dev-1", PUBLIC, KEY.key_id, required=True)
    with pytest.raises(SignatureRefused):
        check_signature("dev-1", None, b"{}", required, SignaturePolicy(), NOW)


def test_a_signature_from_a_device_without_a_key_is_refused() -> None:
    with pytest.raises(SignatureRefused) as refused:
        check_signature("dev-1", header(b"{}"), b"{}", None, SignaturePolicy(), NOW)
    assert refused.value.reason is RejectReason.SIGNATURE_KEY_UNKNOWN


def test_envelopes_are_told_from_plain_payloads() -> None:
    assert open_envelope(b'{"readings": []}') is None
    envelope = open_envelope(b'{"medmesh-signature": "x", "payload": "e30="}')
    assert envelope is not None and envelope.payload == b"{}"
    with pytest.raises(InvalidReading):
        open_envelope(b'{"medmesh-signature": "x", "payload": "e30=", "more": 1}')


def test_public_keys_are_read_from_pem_or_base64_and_nothing_else() -> None:
    pem = PRIVATE.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert ed25519_public_key(pem) == PUBLIC
    assert ed25519_public_key(base64.b64encode(PUBLIC) + b"\n") == PUBLIC
    for bad in (b"", b"hello", base64.b64encode(b"short")):
        with pytest.raises(ValueError):
            ed25519_public_key(bad)
