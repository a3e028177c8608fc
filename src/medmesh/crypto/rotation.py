"""Master key rotation without downtime: a new version becomes active for new wraps, then
every data key is rewrapped in small batches while the platform keeps serving; keys not yet
rewrapped still unwrap with their old version, which is retired only once nothing uses it."""

from __future__ import annotations

from dataclasses import dataclass

from medmesh.crypto.envelope import Cipher, wrap_context
from medmesh.crypto.errors import KeyringError


@dataclass(frozen=True, slots=True)
class RotationReport:
    new_key_id: str
    rewrapped: int
    by_master_key: dict[str, int]


async def rewrap_all(cipher: Cipher, *, batch_size: int = 500) -> int:
    """Rewrap every data key not wrapped by the active master key; returns how many."""
    done = 0
    while True:
        active = cipher.provider.active_key_id()
        batch = await cipher.keys.wrapped_with_other_than(active, batch_size)
        if not batch:
            return done
        for stored in batch:
            context = wrap_context(stored.patient_id, stored.key_id)
            raw = await cipher.provider.unwrap(stored.wrapped, context)
            # A key destroyed or rewrapped meanwhile is skipped by the compare-and-set.
            if await cipher.keys.replace_wrapping(stored, await cipher.provider.wrap(raw, context)):
                done += 1


async def rotate(cipher: Cipher, *, batch_size: int = 500) -> RotationReport:
    """Add a master key version, make it active, rewrap every data key with it."""
    new_key_id = await cipher.provider.add_version()
    rewrapped = await rewrap_all(cipher, batch_size=batch_size)
    return RotationReport(new_key_id, rewrapped, await cipher.keys.count_by_master_key())


async def retire(cipher: Cipher, key_id: str) -> None:
    """Remove an old master key version; refused while a data key is still wrapped with it."""
    counts = await cipher.keys.count_by_master_key()
    if counts.get(key_id, 0):
        raise KeyringError(
            f"{counts[key_id]} data keys are still wrapped with {key_id}; "
            "run `medmesh keys rotate` (or its rewrap) to completion first"
        )
    await cipher.provider.retire(key_id)
