"""What clinicians do with an alert: acknowledge it ("I am on it"), resolve it with a reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from medmesh.domain.alerts import Alert
from medmesh.domain.errors import Conflict
from medmesh.events.bus import EventBus
from medmesh.rules.notify import publish_alerts
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database


def _now() -> datetime:
    return datetime.now(UTC)


async def _change(
    database: Database, bus: EventBus, alert_id: str, step: Callable[[Alert], Alert]
) -> Alert:
    async with database.write() as conn:
        repository = Alerts(conn)
        current = await repository.get(alert_id)
        changed = step(current)  # raises Conflict for a transition the lifecycle forbids
        if not await repository.transition(changed, expected=current.status):
            raise Conflict("the alert changed meanwhile; reload it and try again")
        stored = await repository.get(alert_id)
    await publish_alerts(bus, [stored])
    return stored


async def acknowledge(
    database: Database, bus: EventBus, alert_id: str, who: str, *, at: datetime | None = None
) -> Alert:
    """Acknowledge an open alert as `who`. NotFound, or Conflict unless it is open."""
    moment = at or _now()
    return await _change(database, bus, alert_id, lambda a: a.acknowledge(who, moment))


async def resolve(
    database: Database,
    bus: EventBus,
    alert_id: str,
    who: str,
    reason: str,
    *,
    at: datetime | None = None,
) -> Alert:
    """Resolve an open or acknowledged alert as `who`. NotFound, or Conflict if resolved."""
    moment = at or _now()
    return await _change(database, bus, alert_id, lambda a: a.resolve(who, moment, reason))
