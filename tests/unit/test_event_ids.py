"""Event ids are UUID version 7 (RFC 9562): a resuming stream client's `Last-Event-ID` says
from when it was away."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from medmesh.events.model import Event, event_id, event_time


def test_an_event_id_is_a_version_7_uuid_carrying_its_time_to_the_millisecond() -> None:
    at = datetime(2026, 12, 4, 18, 30, 15, 123456, tzinfo=UTC)
    parsed = uuid.UUID(event_id(at))
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert event_time(str(parsed)) == at.replace(microsecond=123000)


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    start = datetime(2026, 12, 4, tzinfo=UTC)
    ids = [event_id(start + timedelta(milliseconds=n)) for n in range(50)]
    assert sorted(ids) == ids
    assert len({event_id(start) for _ in range(1000)}) == 1000
    assert event_time(Event("alert", None, {}).id) is not None


def test_an_id_that_carries_no_time_resumes_nothing() -> None:
    assert event_time(str(uuid.uuid4())) is None  # an id from before ids were ordered
    assert event_time("not an id") is None
    assert event_time("") is None
