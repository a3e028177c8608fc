"""The master key: a `KeyProvider` wraps and unwraps data keys, and holds the platform's blind
index key and signing key. `LocalKeyFile` keeps them in a JSON keyring file (mode 0600); a KMS
(AWS KMS, Vault transit, …) plugs in by implementing the protocol."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medmesh.crypto.errors import KeyringError, Undecryptable

KEYRING_FORMAT = "medmesh-keyring/1"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted by the master key version `master_key_id`."""

    master_key_id: str
    blob: bytes


class KeyProvider(Protocol):
    """The platform's master key material, wherever it lives."""

    def active_key_id(self) -> str:
        """The master key version new data keys are wrapped with."""
        ...

    def key_ids(self) -> list[str]:
        """Every master key version still able to unwrap, oldest first."""
        ...

    async def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        """Encrypt a data key with the active version; `context` is bound to it."""
        ...

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        """Decrypt a data key; raises Undecryptable when it does not authenticate."""
        ...

    async def add_version(self) -> str:
        """Create a master key version and make it active; returns its id."""
        ...

    async def retire(self, key_id: str) -> None:
        """Forget a master key version (nothing may still be wrapped with it)."""
        ...

    def blind_index_key(self) -> bytes:
        """The HMAC key of blind indexes (lookups by identifier); stable across rotations."""
        ...

    async def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature by the platform's signing key."""
        ...

    def signing_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key that verifies `sign`."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class LocalKeyFile:
    """A keyring in a local JSON file, created (mode 0600) on first use if missing.

    Several processes may share the file: it is re-read when it changes on disk, so a version
    added by `medmesh keys rotate` is used by running servers without a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._active = ""
        self._master: dict[str, bytes] = {}
        self._aead: dict[str, AESGCM] = {}
        self._index_key = b""
        self._signing: Ed25519PrivateKey | None = None
        if not path.exists():
            self._create()
        self._load()

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        signing = Ed25519PrivateKey.generate().private_bytes_raw()
        document = {
            "format": KEYRING_FORMAT,
            "active": "mk-1",
            "master_keys": {"mk-1": _b64(AESGCM.generate_key(bit_length=256))},
            "index_key": _b64(os.urandom(32)),
            "signing_key": _b64(signing),
        }
        # Written whole to a private temporary file, then linked into place: another process
        # starting at the same moment sees either no keyring or a complete one, never half.
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            pass  # another process created it first; use theirs
        finally:
            temporary.unlink()

    def _load(self) -> None:
        try:
            info = self.path.stat()
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyringError(
                    f"the master keyring {self.path} is readable by other users; "
                    "chmod 600 it (it holds the platform's master keys)"
                )
            document = json.loads(self.path.read_text())
            if document.get("format") != KEYRING_FORMAT:
                raise KeyringError(f"{self.path} is not a medmesh keyring ({KEYRING_FORMAT})")
            master = {k: _unb64(v) for k, v in document["master_keys"].items()}
            active = document["active"]
            if active not in master:
                raise KeyringError(f"the keyring's active master key {active!r} is missing")
            index_key = _unb64(document["index_key"])
            signing = Ed25519PrivateKey.from_private_bytes(_unb64(document["signing_key"]))
        except OSError as exc:
            raise KeyringError(f"cannot read the master keyring {self.path}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyringError(f"the master keyring {self.path} is malformed ({exc})") from None
        self._master = master
        self._aead = {k: AESGCM(v) for k, v in master.items()}
        self._active = active
        self._index_key = index_key
        self._signing = signing
        self._mtime_ns = info.st_mtime_ns

    def _refresh(self) -> None:
        """Re-read the file if it changed since it was loaded (a rotation elsewhere)."""
        with self._lock:
            try:
                changed = self.path.stat().st_mtime_ns != self._mtime_ns
            except OSError as exc:
                raise KeyringError(f"cannot read the master keyring {self.path}: {exc}") from None
            if changed:
                self._load()

    def _save(self, active: str, master: dict[str, bytes]) -> None:
        assert self._signing is not None
        document = {
            "format": KEYRING_FORMAT,
            "active": active,
            "master_keys": {k: _b64(v) for k, v in master.items()},
            "index_key": _b64(self._index_key),
            "signing_key": _b64(self._signing.private_bytes_raw()),
        }
        # Write a sibling file and rename it over: readers never see half a keyring.
        temporary = self.path.with_name(self.path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        self._load()

    def active_key_id(self) -> str:
        self._refresh()
        return self._active

    def key_ids(self) -> list[str]:
        self._refresh()
        return sorted(self._master, key=lambda k: int(k.removeprefix("mk-")))

    async def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        self._refresh()
        nonce = os.urandom(12)
        sealed = self._aead[self._active].encrypt(nonce, data_key, context)
        return WrappedKey(self._active, nonce + sealed)

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        if wrapped.master_key_id not in self._aead:
            self._refresh()
        aead = self._aead.get(wrapped.master_key_id)
        if aead is None:
            raise KeyringError(f"master key {wrapped.master_key_id} is not in the keyring")
        try:
            return aead.decrypt(wrapped.blob[:12], wrapped.blob[12:], context)
        except InvalidTag:
            raise Undecryptable("a wrapped data key failed authentication") from None

    async def add_version(self) -> str:
        self._refresh()
        with self._lock:
            number = max(int(k.removeprefix("mk-")) for k in self._master) + 1
            key_id = f"mk-{number}"
            master = dict(self._master)
            master[key_id] = AESGCM.generate_key(bit_length=256)
            self._save(key_id, master)
        return key_id

    async def retire(self, key_id: str) -> None:
        self._refresh()
        with self._lock:
            if key_id == self._active:
                raise KeyringError(f"{key_id} is the active master key; rotate first")
            if key_id not in self._master:
                raise KeyringError(f"master key {key_id} is not in the keyring")
            master = {k: v for k, v in self._master.items() if k != key_id}
            self._save(self._active, master)

    def blind_index_key(self) -> bytes:
        return self._index_key

    async def sign(self, message: bytes) -> bytes:
        assert self._signing is not None
        return self._signing.sign(message)

    def signing_public_key(self) -> bytes:
        assert self._signing is not None
        return self._signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
