"""The `readings` event: which observations were stored for a patient (ids, codes, devices; no
values), published after each committed batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from medmesh.domain.reading import Reading
from medmesh.events.bus import EventBus
from medmesh.events.model import READINGS, Event

# Observation ids one `readings` event names at most: keeps it well under the 8000-byte NOTIFY
# limit (events/postgres.py) and each webhook notification to a bounded size.
READINGS_PER_EVENT = 100


def readings_publisher(
    bus: EventBus,
) -> Callable[[Sequence[Sequence[Reading]]], Awaitable[None]]:
    """A round listener (ingest/after_commit.py): a `readings` event per patient (per 100
    readings) for every committed batch of the round, all published together."""

    async def publish(batches: Sequence[Sequence[Reading]]) -> None:
        await bus.publish_many([event for batch in batches for event in readings_events(batch)])

    return publish


def readings_events(readings: Sequence[Reading]) -> list[Event]:
    """The `readings` events of one committed batch."""
    by_patient: dict[str, list[Reading]] = {}
    for reading in readings:
        by_patient.setdefault(reading.patient_id, []).append(reading)
    events = []
    for patient_id, all_mine in by_patient.items():
        for start in range(0, len(all_mine), READINGS_PER_EVENT):
            mine = all_mine[start : start + READINGS_PER_EVENT]
            data = {
                "count": len(mine),
                "codes": sorted({r.measure.code for r in mine}),
                "devices": sorted({r.device_id for r in mine}),
                "observations": [r.observation_id for r in mine],
            }
            events.append(Event(READINGS, patient_id, data))
    return events
