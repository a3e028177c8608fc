"""Device credentials this process has seen valid (secret hash → device id), so the ingest
routes authenticate a device without a database round trip of their own.

A hit is not the final word: the ingest pipeline checks the credential again in the
transaction that stores the readings (`DeviceBatch.credential`), so a rotated or removed
credential stores nothing from the moment its change is committed, in every process; the
request is answered 401 and the entry forgotten. Nothing expires by time.
"""

from __future__ import annotations

from collections import OrderedDict


class KnownDeviceCredentials:
    """Bounded; the least recently used entry goes first."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._devices: OrderedDict[str, str] = OrderedDict()

    def device_of(self, secret_hash: str) -> str | None:
        device_id = self._devices.get(secret_hash)
        if device_id is not None:
            self._devices.move_to_end(secret_hash)
        return device_id

    def remember(self, secret_hash: str, device_id: str) -> None:
        self._devices[secret_hash] = device_id
        self._devices.move_to_end(secret_hash)
        while len(self._devices) > self._size:
            self._devices.popitem(last=False)

    def forget(self, secret_hash: str) -> None:
        self._devices.pop(secret_hash, None)
