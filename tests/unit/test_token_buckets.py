"""The token bucket behind per-client rate limits, on a clock the test moves."""

from __future__ import annotations

import pytest

from medmesh.http.rate_limit import Budget, TokenBuckets
from medmesh.testing import ManualTimer

BUDGET = Budget(per_minute=60, burst=3)  # one a second, three at once


def test_a_burst_is_allowed_then_the_wait_is_until_the_next_token() -> None:
    clock = ManualTimer()
    buckets = TokenBuckets(max_keys=10, clock=clock)
    assert [buckets.take("a", BUDGET) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", BUDGET) == pytest.approx(1.0)
    clock.now += 0.25
    assert buckets.take("a", BUDGET) == pytest.approx(0.75)


def test_tokens_come_back_at_the_budgets_rate_up_to_the_burst() -> None:
    clock = ManualTimer()
    buckets = TokenBuckets(max_keys=10, clock=clock)
    for _ in range(3):
        buckets.take("a", BUDGET)
    clock.now += 2.0
    assert buckets.take("a", BUDGET) == 0.0
    assert buckets.take("a", BUDGET) == 0.0
    assert buckets.take("a", BUDGET) > 0.0
    clock.now += 3600.0  # a long pause refills to the burst, not beyond
    assert [buckets.take("a", BUDGET) for _ in range(4)][-1] > 0.0


def test_keys_do_not_share_tokens_and_waiting_takes_none() -> None:
    buckets = TokenBuckets(max_keys=10, clock=ManualTimer())
    for _ in range(3):
        buckets.take("a", BUDGET)
    assert buckets.wait("a", BUDGET) > 0.0
    assert buckets.wait("b", BUDGET) == 0.0
    assert buckets.wait("b", BUDGET) == 0.0
    assert buckets.take("b", BUDGET) == 0.0


def test_the_least_recently_used_key_is_forgotten_past_the_limit() -> None:
    buckets = TokenBuckets(max_keys=2, clock=ManualTimer())
    for _ in range(3):
        buckets.take("a", BUDGET)
    buckets.take("b", BUDGET)
    buckets.take("c", BUDGET)  # "a" goes: it starts again with a full bucket
    assert buckets.wait("a", BUDGET) == 0.0
