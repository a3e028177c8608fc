"""Every alert change becomes an ALERT event on the bus, after the change is committed."""

from __future__ import annotations

from collections.abc import Iterable

from medmesh.domain.alerts import Alert, alert_json
from medmesh.events.bus import EventBus
from medmesh.events.model import ALERT, Event


async def publish_alerts(bus: EventBus, changed: Iterable[Alert]) -> None:
    await bus.publish_many([Event(ALERT, alert.patient_id, alert_json(alert)) for alert in changed])
