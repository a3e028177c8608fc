"""The in-memory keyring of medmesh.testing behaves as the file keyring does: data keys wrapped
by it seal and open, survive a master key rotation, and are gone for good once destroyed."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmesh.crypto.envelope import Cipher
from medmesh.crypto.errors import DataKeyDestroyed, KeyringError
from medmesh.crypto.keystore import LocalKeyStore
from medmesh.crypto.rotation import rotate
from medmesh.testing import MemoryKeyProvider


async def test_a_sealed_value_opens_after_rotation_and_not_after_destruction(
    tmp_path: Path,
) -> None:
    provider = MemoryKeyProvider()
    cipher = Cipher(provider, LocalKeyStore(tmp_path / "keys.db"), cache_seconds=0)
    sealed = (await cipher.key_or_create("patient-1")).seal_float(72.0, "observations.value", "o1")

    await rotate(cipher)
    assert provider.active_key_id() == "mk-2"
    cipher.forget_cached()
    assert (await cipher.key("patient-1")).open_float(sealed, "observations.value", "o1") == 72.0
    with pytest.raises(KeyringError, match="active master key"):
        await provider.retire("mk-2")

    await cipher.destroy("patient-1")
    cipher.forget_cached()
    with pytest.raises(DataKeyDestroyed):
        await cipher.key("patient-1")
    assert await cipher.keys.was_destroyed("patient-1")
    assert await cipher.keys.destroyed() == ["patient-1"]  # the tombstone a restore reads


async def test_signatures_verify_with_the_published_public_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    provider = MemoryKeyProvider()
    signature = await provider.sign(b"erasure certificate")
    public = Ed25519PublicKey.from_public_bytes(provider.signing_public_key())
    public.verify(signature, b"erasure certificate")  # raises if it does not verify
