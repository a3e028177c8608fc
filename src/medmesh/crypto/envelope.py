"""Envelope encryption of health data: each patient's values are sealed with AES-256-GCM under
the patient's data key; the data key is wrapped by the master key and kept in the key store.

A sealed value is `version (1 byte) | nonce (12 bytes) | ciphertext and tag`. Its associated
data names the column, the patient and the row, so a ciphertext copied onto another row or
another patient does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medmesh.crypto.errors import DataKeyDestroyed, Undecryptable
from medmesh.crypto.keyring import KeyProvider
from medmesh.crypto.keystore import PatientKeyStore, StoredKey

FORMAT_VERSION = 1
_NONCE_BYTES = 12
_FLOAT = struct.Struct(">d")

# The key of data that belongs to no patient yet (e.g. a refused reading from an unassigned
# device): an ordinary data key under a reserved owner id that no patient id can take.
PLATFORM_OWNER = "platform:dead-letters"


def associated_data(column: str, owner: str, row: str) -> bytes:
    """What a ciphertext is bound to: `column` (table.column), its owner and its row."""
    return f"medmesh/{FORMAT_VERSION}\x1f{column}\x1f{owner}\x1f{row}".encode()


_HEADER = bytes((FORMAT_VERSION,))
_OVERHEAD = 1 + _NONCE_BYTES + 16


@dataclass(frozen=True, slots=True)
class DataKey:
    """One owner's unwrapped data key, ready to seal and open."""

    owner: str
    key_id: str
    _aead: AESGCM

    def seal(self, plaintext: bytes, column: str, row: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        aad = associated_data(column, self.owner, row)
        return _HEADER + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, column: str, row: str) -> bytes:
        if len(sealed) < _OVERHEAD or sealed[0] != FORMAT_VERSION:
            raise Undecryptable(f"{column} holds no ciphertext of a known format")
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(
                view[1 : 1 + _NONCE_BYTES],
                view[1 + _NONCE_BYTES :],
                associated_data(column, self.owner, row),
            )
        except InvalidTag:
            raise Undecryptable(f"{column} of a row failed authentication") from None

    def seal_text(self, text: str, column: str, row: str) -> bytes:
        return self.seal(text.encode("utf-8"), column, row)

    def open_text(self, sealed: bytes, column: str, row: str) -> str:
        return self.open(sealed, column, row).decode("utf-8")

    def seal_float(self, value: float, column: str, row: str) -> bytes:
        return self.seal(_FLOAT.pack(value), column, row)

    def open_float(self, sealed: bytes, column: str, row: str) -> float:
        value: float = _FLOAT.unpack(self.open(sealed, column, row))[0]
        return value

    def seal_floats(self, values: Sequence[tuple[str, float]], column: str) -> list[bytes]:
        """Seal many (row, float) pairs of one column: a batch of readings. The same
        ciphertexts as `seal_float` gives one by one, with the associated data's prefix built
        once and the nonces drawn in one call."""
        prefix = f"medmesh/{FORMAT_VERSION}\x1f{column}\x1f{self.owner}\x1f".encode()
        encrypt = self._aead.encrypt
        pack = _FLOAT.pack
        nonces = os.urandom(_NONCE_BYTES * len(values))
        sealed = []
        for n, (row, value) in enumerate(values):
            nonce = nonces[n * _NONCE_BYTES : (n + 1) * _NONCE_BYTES]
            sealed.append(_HEADER + nonce + encrypt(nonce, pack(value), prefix + row.encode()))
        return sealed

    def open_floats(self, sealed: Sequence[tuple[str, bytes]], column: str) -> list[float]:
        """Open many (row, sealed float) pairs of one column: a chart's month of readings.
        The same checks as `open`, with the per-value work cut to the decryption."""
        prefix = f"medmesh/{FORMAT_VERSION}\x1f{column}\x1f{self.owner}\x1f".encode()
        decrypt = self._aead.decrypt
        unpack = _FLOAT.unpack
        size = _OVERHEAD + _FLOAT.size
        values = []
        try:
            for row, blob in sealed:
                if len(blob) != size or blob[0] != FORMAT_VERSION:
                    raise Undecryptable(f"{column} holds no ciphertext of a known format")
                values.append(unpack(decrypt(blob[1:13], blob[13:], prefix + row.encode()))[0])
        except InvalidTag:
            raise Undecryptable(f"{column} of a row failed authentication") from None
        return values

    def open_many(self, sealed: Sequence[tuple[str, bytes]], column: str) -> list[bytes]:
        """Open many (row, sealed bytes) pairs of one column: a chart's rollup rows. The same
        checks as `open`, with the associated data's prefix built once."""
        prefix = f"medmesh/{FORMAT_VERSION}\x1f{column}\x1f{self.owner}\x1f".encode()
        decrypt = self._aead.decrypt
        opened = []
        try:
            for row, blob in sealed:
                if len(blob) < _OVERHEAD or blob[0] != FORMAT_VERSION:
                    raise Undecryptable(f"{column} holds no ciphertext of a known format")
                opened.append(decrypt(blob[1:13], blob[13:], prefix + row.encode()))
        except InvalidTag:
            raise Undecryptable(f"{column} of a row failed authentication") from None
        return opened


def wrap_context(owner: str, key_id: str) -> bytes:
    return f"medmesh/{FORMAT_VERSION}\x1fdata-key\x1f{owner}\x1f{key_id}".encode()


class Cipher:
    """Per-patient data keys for the store: get or create, destroy, and a bounded in-process
    cache of unwrapped keys (entries expire after `cache_seconds`, so a key destroyed by another
    process leaves this one's memory soon after)."""

    def __init__(
        self,
        provider: KeyProvider,
        keys: PatientKeyStore,
        *,
        cache_size: int = 10_000,
        cache_seconds: float = 300.0,
    ) -> None:
        self.provider = provider
        self.keys = keys
        self._cache: OrderedDict[str, tuple[float, DataKey]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._index_key = provider.blind_index_key()

    def _cached(self, owner: str) -> DataKey | None:
        entry = self._cache.get(owner)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._cache[owner]
            return None
        self._cache.move_to_end(owner)
        return entry[1]

    def _remember(self, key: DataKey) -> None:
        self._cache[key.owner] = (time.monotonic() + self._cache_seconds, key)
        self._cache.move_to_end(key.owner)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _unwrap(self, stored: StoredKey) -> DataKey:
        raw = await self.provider.unwrap(
            stored.wrapped, wrap_context(stored.patient_id, stored.key_id)
        )
        key = DataKey(stored.patient_id, stored.key_id, AESGCM(raw))
        self._remember(key)
        return key

    async def key(self, owner: str) -> DataKey:
        """The owner's data key; raises DataKeyDestroyed when there is none (erased)."""
        cached = self._cached(owner)
        if cached is not None:
            return cached
        stored = await self.keys.get(owner)
        if stored is None:
            raise DataKeyDestroyed("the patient's data key does not exist (erased?)")
        return await self._unwrap(stored)

    async def key_or_create(self, owner: str) -> DataKey:
        """The owner's data key, created on first use."""
        cached = self._cached(owner)
        if cached is not None:
            return cached
        stored = await self.keys.get(owner)
        if stored is None:
            key_id = f"dk-{uuid.uuid4()}"
            raw = AESGCM.generate_key(bit_length=256)
            wrapped = await self.provider.wrap(raw, wrap_context(owner, key_id))
            try:
                stored = await self.keys.add_if_absent(StoredKey(owner, key_id, wrapped))
            except KeyError:
                raise DataKeyDestroyed("the patient was erased; their record is closed") from None
        return await self._unwrap(stored)

    async def keys_for(self, owners: list[str] | set[str]) -> dict[str, DataKey]:
        """The data keys of these owners; an owner without one is left out."""
        found: dict[str, DataKey] = {}
        missing = []
        for owner in owners:
            cached = self._cached(owner)
            if cached is None:
                missing.append(owner)
            else:
                found[owner] = cached
        for owner, stored in (await self.keys.get_many(missing)).items():
            found[owner] = await self._unwrap(stored)
        return found

    async def destroy(self, owner: str) -> str | None:
        """Crypto-shred: destroy the owner's data key in the key store and in this process.
        Returns the destroyed key's id (None when there was none)."""
        self._cache.pop(owner, None)
        key_id = await self.keys.destroy(owner)
        self._cache.pop(owner, None)
        return key_id

    def forget_cached(self) -> None:
        """Drop every unwrapped key held in memory."""
        self._cache.clear()

    def blind_index(self, kind: str, value: str) -> str:
        """A keyed hash (HMAC-SHA256) that finds a value by equality without storing it."""
        message = f"medmesh/{FORMAT_VERSION}\x1f{kind}\x1f{value}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()
