"""Slowing down password guessing: an account locks after consecutive failed sign-ins, for
longer each time; a client address that fails too often across accounts is turned away for a
while; unknown usernames lock like real ones, so a lock says nothing about who exists.

The address counts and the unknown-username counts live in the process (a dict): each server
process counts on its own and forgets on restart. Account locks are in the database.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

V = TypeVar("V")

MAX_TRACKED = 10_000  # addresses and unknown usernames remembered at most (oldest dropped)


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int = 5  # consecutive failed sign-ins (password or code) that lock
    lock_for: timedelta = timedelta(minutes=15)  # the first lock; each next one doubles
    max_lock: timedelta = timedelta(hours=24)
    address_max_failures: int = 20  # failed sign-ins from one address within the window
    address_window: timedelta = timedelta(minutes=15)

    def locked_until(self, failures: int, now: datetime) -> datetime | None:
        """When an account with this many consecutive failures unlocks, if it locks now: at the
        5th failure for 15 minutes, at the 10th for 30, at the 15th for an hour…"""
        if failures < self.max_failures or failures % self.max_failures:
            return None
        doublings = failures // self.max_failures - 1
        period: timedelta = min(self.lock_for * 2 ** min(doublings, 16), self.max_lock)
        return now + period


@dataclass(slots=True)
class _Phantom:
    failures: int
    locked_until: datetime | None


class SignInThrottle:
    """In-process counters: failures per client address, and lockout of unknown usernames."""

    def __init__(self, policy: LockoutPolicy) -> None:
        self.policy = policy
        self._addresses: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._phantoms: OrderedDict[str, _Phantom] = OrderedDict()

    def address_blocked_until(self, address: str, now: datetime) -> datetime | None:
        """When this address may try again, if it has failed too often lately."""
        failures = self._addresses.get(address)
        if failures is None:
            return None
        cutoff = now - self.policy.address_window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if len(failures) < self.policy.address_max_failures:
            return None
        return failures[0] + self.policy.address_window

    def address_failed(self, address: str, now: datetime) -> None:
        failures = self._addresses.pop(address, None) or deque()
        failures.append(now)
        while len(failures) > self.policy.address_max_failures:
            failures.popleft()
        self._addresses[address] = failures
        _bound(self._addresses)

    def phantom_locked_until(self, username: str, now: datetime) -> datetime | None:
        phantom = self._phantoms.get(username)
        if phantom is None or phantom.locked_until is None or phantom.locked_until <= now:
            return None
        return phantom.locked_until

    def phantom_failed(self, username: str, now: datetime) -> None:
        """An unknown username failed: count it as an account would be counted."""
        phantom = self._phantoms.pop(username, None) or _Phantom(0, None)
        phantom.failures += 1
        phantom.locked_until = self.policy.locked_until(phantom.failures, now)
        self._phantoms[username] = phantom
        _bound(self._phantoms)


def _bound(counters: OrderedDict[str, V]) -> None:
    while len(counters) > MAX_TRACKED:
        counters.popitem(last=False)
