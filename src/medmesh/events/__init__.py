"""The event bus: what happened (readings stored, alerts raised or changed) reaches dashboards,
webhooks and other processes."""

from medmesh.events.bus import EventBus, InProcessBus, Subscription
from medmesh.events.model import Event

__all__ = ["Event", "EventBus", "InProcessBus", "Subscription"]
