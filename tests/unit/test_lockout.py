"""Lockout periods and the per-address throttle (in-process counters)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medmesh.access.identity.lockout import LockoutPolicy, SignInThrottle

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = LockoutPolicy()


def test_an_account_locks_at_every_fifth_failure_for_twice_as_long_each_time() -> None:
    assert [POLICY.locked_until(n, NOW) for n in range(1, 5)] == [None] * 4
    assert POLICY.locked_until(5, NOW) == NOW + timedelta(minutes=15)
    assert POLICY.locked_until(6, NOW) is None
    assert POLICY.locked_until(10, NOW) == NOW + timedelta(minutes=30)
    assert POLICY.locked_until(15, NOW) == NOW + timedelta(hours=1)
    assert POLICY.locked_until(500, NOW) == NOW + timedelta(hours=24)


def test_an_address_failing_too_often_waits_until_its_oldest_failure_leaves_the_window() -> None:
    throttle = SignInThrottle(LockoutPolicy(address_max_failures=3))
    for minute in range(3):
        assert throttle.address_blocked_until("203.0.113.9", NOW) is None
        throttle.address_failed("203.0.113.9", NOW + timedelta(minutes=minute))
    later = NOW + timedelta(minutes=3)
    assert throttle.address_blocked_until("203.0.113.9", later) == NOW + timedelta(minutes=15)
    assert throttle.address_blocked_until("198.51.100.1", later) is None
    assert throttle.address_blocked_until("203.0.113.9", NOW + timedelta(minutes=15)) is None


def test_an_unknown_username_locks_like_an_account() -> None:
    throttle = SignInThrottle(POLICY)
    for _ in range(4):
        throttle.phantom_failed("nobody", NOW)
    assert throttle.phantom_locked_until("nobody", NOW) is None
    throttle.phantom_failed("nobody", NOW)
    assert throttle.phantom_locked_until("nobody", NOW) == NOW + timedelta(minutes=15)
    assert throttle.phantom_locked_until("nobody", NOW + timedelta(minutes=15)) is None
