"""The signing keys a process remembers: a device known to have none is told apart from one not
read yet; bounded, least recently used out, forgotten on demand."""

from __future__ import annotations

from medmesh.ingest.known_signing_keys import KnownSigningKeys
from medmesh.store.device_keys import DeviceSigningKey

KEY = DeviceSigningKey("device-a", b"\x01" * 32, "0123456789abcdef", required=True)


def test_a_device_read_to_have_no_key_is_known_as_such() -> None:
    known = KnownSigningKeys()
    assert known.lookup("device-b") == (False, None)
    known.remember("device-b", None)
    assert known.lookup("device-b") == (True, None)


def test_the_least_recently_used_device_goes_first_when_full() -> None:
    known = KnownSigningKeys(size=2)
    known.remember("device-a", KEY)
    known.remember("device-b", None)
    assert known.lookup("device-a") == (True, KEY)  # a is now the most recently used
    known.remember("device-c", None)
    assert known.lookup("device-b") == (False, None)
    assert known.lookup("device-a") == (True, KEY)
    assert known.lookup("device-c") == (True, None)


def test_a_forgotten_device_is_read_again() -> None:
    known = KnownSigningKeys()
    known.remember("device-a", KEY)
    known.forget("device-a")
    known.forget("device-never-seen")
    assert known.lookup("device-a") == (False, None)
