"""Fakes for the edges medmesh owns, shipped beside the real things so that tests (ours and
integrators') need no monkeypatching: clocks a test moves, and a master keyring in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medmesh.crypto.errors import KeyringError, Undecryptable
from medmesh.crypto.keyring import WrappedKey

__all__ = ["FrozenClock", "ManualTimer", "MemoryKeyProvider"]


@dataclass
class FrozenClock:
    """A wall clock (`() -> datetime`) that stands still until the test moves it."""

    at: datetime

    def __call__(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by


@dataclass
class ManualTimer:
    """A monotonic clock in seconds (`() -> float`, like `time.monotonic`) moved by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryKeyProvider:
    """A `KeyProvider` (crypto/keyring.py) whose master keys live in memory only: what
    `LocalKeyFile` does, without the file."""

    def __init__(self) -> None:
        self._master = {"mk-1": AESGCM.generate_key(bit_length=256)}
        self._active = "mk-1"
        self._index_key = os.urandom(32)
        self._signing = Ed25519PrivateKey.generate()

    def active_key_id(self) -> str:
        return self._active

    def key_ids(self) -> list[str]:
        return sorted(self._master, key=lambda k: int(k.removeprefix("mk-")))

    async def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        sealed = AESGCM(self._master[self._active]).encrypt(nonce, data_key, context)
        return WrappedKey(self._active, nonce + sealed)

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        master = self._master.get(wrapped.master_key_id)
        if master is None:
            raise KeyringError(f"master key {wrapped.master_key_id} is not in the keyring")
        try:
            return AESGCM(master).decrypt(wrapped.blob[:12], wrapped.blob[12:], context)
        except InvalidTag:
            raise Undecryptable("a wrapped data key failed authentication") from None

    async def add_version(self) -> str:
        key_id = f"mk-{len(self._master) + 1}"
        while key_id in self._master:
            key_id = f"mk-{int(key_id.removeprefix('mk-')) + 1}"
        self._master[key_id] = AESGCM.generate_key(bit_length=256)
        self._active = key_id
        return key_id

    async def retire(self, key_id: str) -> None:
        if key_id == self._active:
            raise KeyringError(f"{key_id} is the active master key; rotate first")
        if self._master.pop(key_id, None) is None:
            raise KeyringError(f"master key {key_id} is not in the keyring")

    def blind_index_key(self) -> bytes:
        return self._index_key

    async def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message)

    def signing_public_key(self) -> bytes:
        return self._signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
