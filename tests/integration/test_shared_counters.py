"""Several server processes over one PostgreSQL: rate-limit budgets and sign-in lockout
counters shared through Redis (`MEDMESH_REDIS_URL`), and `medmesh serve --workers N`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from medmesh.access.identity.accounts import (
    AccountLocked,
    AddressThrottled,
    SignIn,
    SignInRefused,
)
from medmesh.access.identity.lockout import LockoutPolicy
from medmesh.store.database import Database
from tests.conftest import IN_CI
from tests.live_server import live_server

REDIS_DB = 13  # a database of its own on the shared Redis; only our keys are deleted
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
BURST = 6
START = 240.0  # seconds a server may take to start on a loaded machine


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it (see .ci/run)")
        pytest.skip(message)
    keys = list(client.scan_iter("medmesh:rate:*"))
    if keys:
        client.delete(*keys)
    yield REDIS_URL
    keys = list(client.scan_iter("medmesh:rate:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _limits(**more: str) -> dict[str, str]:
    # Anonymous callers (no credential): BURST requests, then one a minute.
    return {
        "MEDMESH_RATE_LIMIT_ENABLED": "true",
        "MEDMESH_RATE_LIMIT_ANONYMOUS_BURST": str(BURST),
        "MEDMESH_RATE_LIMIT_ANONYMOUS_PER_MINUTE": "1",
        **more,
    }


def _statuses(bases: list[str], rounds: int) -> list[int]:
    """`rounds` anonymous requests to each server in turn, from one address."""
    statuses = []
    for _ in range(rounds):
        for base in bases:
            statuses.append(httpx.get(f"{base}/fhir/metadata", timeout=30).status_code)
    return statuses


def test_two_processes_with_redis_share_one_rate_limit_budget(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = _limits(MEDMESH_REDIS_URL=redis_url)
    with (
        live_server(postgres_url, tmp_path / "a.log", env=env, start_timeout=START) as a,
        live_server(postgres_url, tmp_path / "b.log", env=env, start_timeout=START) as b,
    ):
        statuses = _statuses([a.base_url, b.base_url], rounds=5)
    # 10 requests, half to each process: one budget of 6 between them.
    assert statuses.count(200) == BURST, statuses
    assert statuses[BURST:] == [429] * (10 - BURST)


def test_without_redis_each_process_keeps_its_own_budget(postgres_url: str, tmp_path: Path) -> None:
    """What Redis changes: the same requests, each process counting alone."""
    env = _limits()
    with (
        live_server(postgres_url, tmp_path / "a.log", env=env, start_timeout=START) as a,
        live_server(postgres_url, tmp_path / "b.log", env=env, start_timeout=START) as b,
    ):
        statuses = _statuses([a.base_url, b.base_url], rounds=5)
    assert statuses == [200] * 10


def test_serve_with_two_workers_runs_two_processes_on_one_budget(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = _limits(MEDMESH_REDIS_URL=redis_url)
    with live_server(
        postgres_url, tmp_path / "w.log", env=env, args=["--workers", "2"], start_timeout=START
    ) as server:
        assert server.process is not None
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) >= 2, children
        # Whichever worker the kernel hands each connection to, one budget of 6.
        statuses = _statuses([server.base_url], rounds=10)
    assert statuses == [200] * BURST + [429] * (10 - BURST)
    assert "2 worker processes" in (tmp_path / "w.log").read_text()


def _forget_sign_in_counters() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    keys = list(client.scan_iter("medmesh:signin:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_two_processes_with_redis_share_sign_in_lockout_counters(
    database: Database, redis_url: str
) -> None:
    """Two servers' sign-in steps (one `SignIn` each, as each process builds its own) on one
    Redis: failures for an unknown username and from one address add up across them."""
    _forget_sign_in_counters()
    policy = LockoutPolicy(max_failures=3, address_max_failures=4)
    a = SignIn(database, policy, redis_url=redis_url)
    b = SignIn(database, policy, redis_url=redis_url)
    now = datetime.now(UTC)
    address = "203.0.113.7"
    for side in (a, b):  # two failures, one in each process: no lock yet
        with pytest.raises(SignInRefused) as refused:
            await side.password("nobody", "wrong", address=address, now=now)
        assert not isinstance(refused.value, AccountLocked)
    with pytest.raises(AccountLocked):  # the third, counted with the other two
        await a.password("nobody", "wrong", address=address, now=now)
    with pytest.raises(AccountLocked):  # the other process sees the lock
        await b.password("nobody", "wrong", address=address, now=now)
    with pytest.raises(SignInRefused):  # a fourth failure from the address, another name
        await b.password("someone-else", "wrong", address=address, now=now)
    with pytest.raises(AddressThrottled):
        await a.password("a-third-name", "wrong", address=address, now=now)
    # Without Redis the other process would not know: its own counters are empty.
    alone = SignIn(database, policy)
    with pytest.raises(SignInRefused) as refused:
        await alone.password("nobody", "wrong", address=address, now=now)
    assert not isinstance(refused.value, AccountLocked | AddressThrottled)
    _forget_sign_in_counters()
