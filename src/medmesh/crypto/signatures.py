"""Signed documents (erasure certificates): canonical JSON signed with the platform's Ed25519
key, verifiable by anyone holding the public key printed with them."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medmesh.crypto.keyring import KeyProvider


def canonical_json(document: dict[str, Any]) -> bytes:
    """One byte string per document: sorted keys, no spaces, UTF-8 (RFC 8785 for our values:
    strings, integers and nested objects)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


async def sign_document(provider: KeyProvider, document: dict[str, Any]) -> str:
    """The base64 Ed25519 signature of the document's canonical JSON."""
    return base64.b64encode(await provider.sign(canonical_json(document))).decode("ascii")


def verify_document(document: dict[str, Any], signature: str, public_key: bytes) -> bool:
    """Whether `signature` is the platform's over exactly this document."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, canonical_json(document))
    except (InvalidSignature, ValueError):
        return False
    return True
