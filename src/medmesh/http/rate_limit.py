"""Rate limits per client: a token bucket for each credential, or for each address where a
request carries none, refused with 429, Retry-After and an OperationOutcome.

Counters live in this process, or in Redis when `MEDMESH_REDIS_URL` is set (`RedisTokenBuckets`:
every server process then draws on one budget per client; docs/security.md). A credential is
only hashed here, not checked; so that made-up credentials cannot each buy a fresh budget, a
credential the API has not yet accepted is let through only while its address has
unauthenticated budget left, and each refusal (401) of one is charged to that budget.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio
from starlette.types import ASGIApp, Receive, Scope, Send

from medmesh.http.responses import FhirResponse, operation_outcome
from medmesh.http.status import StatusRecorder

# Cheap, and polled by load balancers and browsers: never limited.
EXEMPT_PATHS = frozenset({"/healthz"})
EXEMPT_PREFIXES = ("/static/",)


@dataclass(frozen=True, slots=True)
class Budget:
    """`per_minute` requests on average, and up to `burst` at once after a quiet spell."""

    per_minute: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    device: Budget  # a device's secret (mmd_…) on ingest
    client: Budget  # an API token, or a signed-in dashboard session
    anonymous: Budget  # per client address: no credential, or one refused with 401
    device_secret_prefix: str  # how a device's secret begins (access/identity/credentials.py)
    max_clients: int = 100_000  # buckets kept; the least recently used go first


class TokenBuckets:
    """One token bucket per key. Two floats a key: a full bucket is the same as none, so
    forgetting the least recently used key loses nothing but its debt."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def _level(self, key: str, budget: Budget) -> tuple[float, float]:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(budget.burst), now))
        return min(float(budget.burst), tokens + (now - at) * budget.per_second), now

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def take(self, key: str, budget: Budget) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be."""
        tokens, now = self._level(key, budget)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / budget.per_second

    def wait(self, key: str, budget: Budget) -> float:
        """Seconds until `key` has a token (0.0: it has one now), taking none."""
        tokens, _ = self._level(key, budget)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / budget.per_second


class Buckets(Protocol):
    """Where the token buckets are kept: this process, or Redis for several processes."""

    async def take(self, key: str, budget: Budget) -> float: ...

    async def wait(self, key: str, budget: Budget) -> float: ...


class LocalBuckets:
    """`TokenBuckets` of this process behind the `Buckets` interface."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    async def take(self, key: str, budget: Budget) -> float:
        return self.buckets.take(key, budget)

    async def wait(self, key: str, budget: Budget) -> float:
        return self.buckets.wait(key, budget)


# One token bucket a key in a Redis hash, updated atomically with Redis's own clock, so every
# process sees one level. Returns the seconds to wait as text (Lua numbers come back as
# integers otherwise). ARGV: tokens a second, burst, 1 to take a token or 0 to only look.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  if ARGV[3] == '1' then tokens = tokens - 1 end
else
  wait = (1 - tokens) / rate
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
end
return tostring(wait)
"""

log = logging.getLogger(__name__)


class RedisTokenBuckets:
    """Token buckets in Redis, shared by every process pointed at it (keys are hashes of
    credentials or addresses, never the credentials). When Redis cannot be reached the
    process falls back to its own buckets, so devices are not refused for Redis's sake; the
    fallback is logged."""

    def __init__(self, url: str, fallback: TokenBuckets, prefix: str = "medmesh:rate:") -> None:
        self._redis = redis.asyncio.Redis.from_url(url, socket_timeout=1.0)
        self._script = self._redis.register_script(_BUCKET_SCRIPT)
        self._fallback = fallback
        self._prefix = prefix

    async def _run(self, key: str, budget: Budget, take: bool) -> float:
        try:
            wait = await self._script(
                keys=[self._prefix + key],
                args=[budget.per_second, budget.burst, "1" if take else "0"],
            )
        except redis.RedisError as exc:
            log.warning("rate limit counters: Redis unreachable (%s)", type(exc).__name__)
            level = self._fallback.take if take else self._fallback.wait
            return level(key, budget)
        return float(wait)

    async def take(self, key: str, budget: Budget) -> float:
        return await self._run(key, budget, take=True)

    async def wait(self, key: str, budget: Budget) -> float:
        return await self._run(key, budget, take=False)

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class _Client:
    key: str
    budget: Budget
    address_key: str
    unverified: bool  # a credential the API has not accepted yet


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def address_key(scope: Scope) -> str:
    """The client's address; for IPv6 its /64, which one subscriber usually holds whole."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"address:{host}"
    if address.version == 6:
        return f"address:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"address:{address}"


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


class RateLimit:
    """`session_identity` names the signed-in user of a session (None: not signed in); it
    runs inside SessionMiddleware."""

    def __init__(
        self,
        app: ASGIApp,
        limits: RateLimits,
        session_identity: Callable[[Mapping[str, Any]], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        redis_url: str | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.session_identity = session_identity
        local = TokenBuckets(limits.max_clients, clock)
        self.buckets: Buckets = (
            LocalBuckets(local) if redis_url is None else RedisTokenBuckets(redis_url, local)
        )
        self._accepted: OrderedDict[str, None] = OrderedDict()

    def _identify(self, scope: Scope) -> _Client:
        address = address_key(scope)
        authorization = _authorization(scope)
        if authorization is not None:
            scheme, _, secret = authorization.partition(" ")
            secret = secret.strip() if scheme.lower() == "bearer" else authorization
            device = secret.startswith(self.limits.device_secret_prefix)
            kind, budget = (
                ("device", self.limits.device) if device else ("client", self.limits.client)
            )
            key = f"{kind}:{_digest(secret)}"
            return _Client(key, budget, address, key not in self._accepted)
        session = scope.get("session")
        if self.session_identity is not None and isinstance(session, Mapping):
            identity = self.session_identity(session)
            if identity is not None:
                return _Client(f"session:{_digest(identity)}", self.limits.client, address, False)
        return _Client(address, self.limits.anonymous, address, False)

    async def _remember(self, client: _Client, status: int) -> None:
        if status == 401:
            self._accepted.pop(client.key, None)
            await self.buckets.take(client.address_key, self.limits.anonymous)
            return
        self._accepted[client.key] = None
        self._accepted.move_to_end(client.key)
        while len(self._accepted) > self.limits.max_clients:
            self._accepted.popitem(last=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        client = self._identify(scope)
        wait = 0.0
        if client.unverified:
            wait = await self.buckets.wait(client.address_key, self.limits.anonymous)
        if not wait:
            wait = await self.buckets.take(client.key, client.budget)
        if wait:
            await _too_many(wait)(scope, receive, send)
            return
        if client.key.startswith("address:"):
            await self.app(scope, receive, send)
            return

        answer = StatusRecorder(send)
        try:
            await self.app(scope, receive, answer)
        finally:
            if client.key.startswith(("device:", "client:")):
                await self._remember(client, answer.status)


def _too_many(wait: float) -> FhirResponse:
    seconds = max(1, math.ceil(wait))
    return FhirResponse(
        operation_outcome(
            "throttled", f"too many requests from this client; retry after {seconds} s"
        ),
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )
