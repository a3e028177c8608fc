"""The webhook delivery queue on both backends: one row per (subscription, event), leases that
outlive a crashed sender, and claims that leave room for other subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medmesh.store.database import Database
from medmesh.store.subscriptions import ACTIVE, StoredSubscription, Subscriptions
from medmesh.store.webhook_deliveries import WebhookDeliveries

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=40)


async def _subscriptions(database: Database, *ids: str) -> None:
    async with database.write() as conn:
        for ident in ids:
            await Subscriptions(conn).add(
                StoredSubscription(ident, "Flag", "https://x.org/", "k", ACTIVE, {}, NOW, "test")
            )


async def test_an_event_is_queued_once_per_subscription(database: Database) -> None:
    await _subscriptions(database, "a", "b")
    async with database.write() as conn:
        assert await WebhookDeliveries(conn).enqueue(["a", "b"], "e1", b"{}", NOW) == 2
    async with database.write() as conn:  # the same event, seen by another process
        assert await WebhookDeliveries(conn).enqueue(["a", "b"], "e1", b"{}", NOW) == 0
    async with database.read() as conn:
        assert len(await WebhookDeliveries(conn).for_subscription("a")) == 1


async def test_a_claimed_delivery_returns_when_its_lease_ends_and_the_stale_sender_is_ignored(
    database: Database,
) -> None:
    await _subscriptions(database, "a")
    async with database.write() as conn:
        await WebhookDeliveries(conn).enqueue(["a"], "e1", b"{}", NOW)
    async with database.write() as conn:
        (first,) = await WebhookDeliveries(conn).claim(NOW, NOW + LEASE, 10, {}, 2)
    async with database.write() as conn:  # leased: nobody else takes it
        assert await WebhookDeliveries(conn).claim(NOW + LEASE / 2, NOW + LEASE, 10, {}, 2) == []
    later = NOW + LEASE
    async with database.write() as conn:  # its sender died: the lease ran out
        (second,) = await WebhookDeliveries(conn).claim(later, later + LEASE, 10, {}, 2)
    assert (first.attempts, second.attempts) == (1, 2)
    async with database.write() as conn:
        assert not await WebhookDeliveries(conn).delivered(first, later)
        assert await WebhookDeliveries(conn).delivered(second, later)
    async with database.read() as conn:
        (row,) = await WebhookDeliveries(conn).for_subscription("a")
    assert (row.status, row.attempts) == ("delivered", 2)


async def test_a_claim_leaves_room_for_other_subscriptions(database: Database) -> None:
    await _subscriptions(database, "slow", "fast")
    async with database.write() as conn:
        for i in range(6):
            await WebhookDeliveries(conn).enqueue(["slow"], f"s{i}", b"{}", NOW)
        await WebhookDeliveries(conn).enqueue(["fast"], "f0", b"{}", NOW + timedelta(seconds=1))
    later = NOW + timedelta(seconds=2)
    async with database.write() as conn:
        claimed = await WebhookDeliveries(conn).claim(later, later + LEASE, 4, {"slow": 1}, 2)
    assert sorted(d.subscription_id for d in claimed) == ["fast", "slow"]
