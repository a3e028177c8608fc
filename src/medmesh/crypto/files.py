"""Files sealed with a data key of their own (export files), wrapped by the master key.

Each file gets a fresh AES-256-GCM key; the wrapped key is stored beside the ciphertext. Files
are short-lived (exports expire), so they are not rewrapped by key rotation: an export must
expire before the master key version that wrapped it is retired.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medmesh.crypto.errors import Undecryptable
from medmesh.crypto.keyring import KeyProvider, WrappedKey

_NONCE_BYTES = 12


def _context(name: str) -> bytes:
    return f"medmesh/1\x1ffile-key\x1f{name}".encode()


async def seal_file(provider: KeyProvider, name: str, data: bytes) -> tuple[bytes, WrappedKey]:
    """`data` encrypted under a new key bound to `name`; the key, wrapped."""
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = nonce + AESGCM(key).encrypt(nonce, data, _context(name))
    return sealed, await provider.wrap(key, _context(name))


async def open_file(provider: KeyProvider, name: str, sealed: bytes, wrapped: WrappedKey) -> bytes:
    key = await provider.unwrap(wrapped, _context(name))
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _context(name))
    except Exception as exc:  # cryptography's InvalidTag and malformed input alike
        raise Undecryptable("an export file did not authenticate") from exc
