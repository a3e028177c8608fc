"""Devices' signing keys as this process last read them (or that a device had none), so that an
HTTP reading is checked without a read transaction of its own.

A key from here decides nothing alone: a signature it refuses is checked again against a fresh
read, and a batch it let through is stored only if the storing transaction finds the device's
key unchanged (`DeviceBatch.signing_key`); otherwise the entry is forgotten and the request
checked again. So a key set, replaced or made required takes effect from its commit, in every
process, as the credentials of access/identity/device_credentials.py do. Nothing expires by time.
"""

from __future__ import annotations

from collections import OrderedDict

from medmesh.store.device_keys import DeviceSigningKey


class KnownSigningKeys:
    """Bounded; the least recently used entry goes first."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._keys: OrderedDict[str, DeviceSigningKey | None] = OrderedDict()

    def lookup(self, device_id: str) -> tuple[bool, DeviceSigningKey | None]:
        """(known, key): whether this process has read the device's key, and that key (None:
        the device had none)."""
        if device_id not in self._keys:
            return False, None
        self._keys.move_to_end(device_id)
        return True, self._keys[device_id]

    def remember(self, device_id: str, key: DeviceSigningKey | None) -> None:
        self._keys[device_id] = key
        self._keys.move_to_end(device_id)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def forget(self, device_id: str) -> None:
        self._keys.pop(device_id, None)
