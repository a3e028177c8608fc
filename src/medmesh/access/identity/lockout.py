"""Slowing down password guessing: an account locks after consecutive failed sign-ins, for
longer each time; a client address that fails too often across accounts is turned away for a
while; unknown usernames lock like real ones, so a lock says nothing about who exists.

The address counts and the unknown-username counts live in the process (a dict), where each
server process counts on its own and forgets on restart, or in Redis when `MEDMESH_REDIS_URL`
is set (`RedisSignInThrottle`), shared by every process. Account locks are in the database.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import redis
import redis.asyncio

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


class Throttle(Protocol):
    """The counters sign-in consults: this process's, or Redis's."""

    async def address_blocked_until(self, address: str, now: datetime) -> datetime | None: ...

    async def address_failed(self, address: str, now: datetime) -> None: ...

    async def phantom_locked_until(self, username: str, now: datetime) -> datetime | None: ...

    async def phantom_failed(self, username: str, now: datetime) -> None: ...


class LocalThrottle:
    """`SignInThrottle` of this process behind the `Throttle` interface."""

    def __init__(self, throttle: SignInThrottle) -> None:
        self.throttle = throttle

    async def address_blocked_until(self, address: str, now: datetime) -> datetime | None:
        return self.throttle.address_blocked_until(address, now)

    async def address_failed(self, address: str, now: datetime) -> None:
        self.throttle.address_failed(address, now)

    async def phantom_locked_until(self, username: str, now: datetime) -> datetime | None:
        return self.throttle.phantom_locked_until(username, now)

    async def phantom_failed(self, username: str, now: datetime) -> None:
        self.throttle.phantom_failed(username, now)


def _hashed(text: str) -> str:
    # Keys name no address or username in Redis, only their hashes.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RedisSignInThrottle:
    """The same counters in Redis, shared by every process: an address's failures as a sorted
    set of times (trimmed to the window), an unknown username's as a hash of its failure count
    and lock end. Keys expire once they no longer matter."""

    def __init__(self, url: str, policy: LockoutPolicy, prefix: str = "medmesh:signin:") -> None:
        self.policy = policy
        self._redis = redis.asyncio.Redis.from_url(url, socket_timeout=1.0)
        self._prefix = prefix

    def _address(self, address: str) -> str:
        return f"{self._prefix}address:{_hashed(address)}"

    def _phantom(self, username: str) -> str:
        return f"{self._prefix}phantom:{_hashed(username)}"

    async def address_blocked_until(self, address: str, now: datetime) -> datetime | None:
        key = self._address(address)
        cutoff = (now - self.policy.address_window).timestamp()
        await self._redis.zremrangebyscore(key, "-inf", cutoff)
        failures = await self._redis.zrange(key, 0, -1, withscores=True)
        if len(failures) < self.policy.address_max_failures:
            return None
        # As the process counters: the window from the oldest of the last max_failures.
        oldest = sorted(score for _, score in failures)[-self.policy.address_max_failures]
        return datetime.fromtimestamp(oldest, now.tzinfo) + self.policy.address_window

    async def address_failed(self, address: str, now: datetime) -> None:
        key = self._address(address)
        window = int(self.policy.address_window.total_seconds()) + 1
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {uuid.uuid4().hex: now.timestamp()})
            pipe.zremrangebyrank(key, 0, -self.policy.address_max_failures - 1)
            pipe.expire(key, window)
            await pipe.execute()

    async def phantom_locked_until(self, username: str, now: datetime) -> datetime | None:
        # redis-py types hash commands for its sync and async clients at once (a union).
        until = await self._redis.hget(self._phantom(username), "locked_until")  # type: ignore[misc]
        if until is None:
            return None
        moment = datetime.fromtimestamp(float(until), now.tzinfo)
        return moment if moment > now else None

    async def phantom_failed(self, username: str, now: datetime) -> None:
        key = self._phantom(username)
        failures = int(await self._redis.hincrby(key, "failures", 1))  # type: ignore[misc]
        until = self.policy.locked_until(failures, now)
        if until is not None:
            await self._redis.hset(key, "locked_until", str(until.timestamp()))  # type: ignore[misc]
        await self._redis.expire(key, int(self.policy.max_lock.total_seconds()) * 2)

    async def close(self) -> None:
        await self._redis.aclose()
