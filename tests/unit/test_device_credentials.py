"""The credentials a process remembers: bounded, least recently used out, forgotten on demand."""

from __future__ import annotations

from medmesh.access.identity.device_credentials import KnownDeviceCredentials


def test_the_least_recently_used_credential_goes_first_when_full() -> None:
    known = KnownDeviceCredentials(size=2)
    known.remember("hash-a", "device-a")
    known.remember("hash-b", "device-b")
    assert known.device_of("hash-a") == "device-a"  # a is now the most recently used
    known.remember("hash-c", "device-c")
    assert known.device_of("hash-b") is None
    assert known.device_of("hash-a") == "device-a"
    assert known.device_of("hash-c") == "device-c"


def test_a_forgotten_credential_is_no_longer_known() -> None:
    known = KnownDeviceCredentials()
    known.remember("hash-a", "device-a")
    known.forget("hash-a")
    known.forget("hash-never-seen")
    assert known.device_of("hash-a") is None
