"""Reading a device's Ed25519 public key as people hand it over: a PEM file (what
`openssl pkey -pubout` writes) or the raw 32 bytes in base64 (what libsodium and Monocypher
firmware holds)."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def ed25519_public_key(text: bytes) -> bytes:
    """The raw 32-byte public key in `text` (PEM or base64); ValueError if it is not one."""
    stripped = text.strip()
    if stripped.startswith(b"-----BEGIN"):
        key = load_pem_public_key(stripped)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM file holds a public key, but not an Ed25519 one")
        return key.public_bytes_raw()
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a public key is a PEM file or 32 bytes in base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key in base64 is 32 bytes long")
    Ed25519PublicKey.from_public_bytes(raw)  # refuses what is not a point on the curve
    return raw
