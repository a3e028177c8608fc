"""The panel's event stream: coalesced to one frame a tick, so a busy ward costs each browser
one row refresh a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from medmesh.events.bus import InProcessBus
from medmesh.events.model import ALERT, READINGS, Event
from medmesh.web.live import for_at_most, panel_frames


async def never_disconnected() -> bool:
    return False


def frames_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in raw.split(b"\n\n"):
        lines = dict(
            line.split(b": ", 1)
            for line in block.split(b"\n")
            if b": " in line and line[:1] != b":"
        )
        if b"event" in lines:
            found.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])["data"]))
    return found


async def everyone(_: str) -> bool:
    return True


async def test_many_readings_become_one_rows_frame_per_tick() -> None:
    bus = InProcessBus()
    stream = panel_frames(
        bus.subscribe(), never_disconnected, lifetime=1.6, visible=everyone, tick=0.5
    )
    assert (await anext(stream)).startswith(b"retry:")
    await bus.publish(Event(READINGS, "p1", {}))
    first = await asyncio.wait_for(anext(stream), 1)  # nothing sent lately: goes at once
    started = time.monotonic()
    for i in range(500):
        await bus.publish(Event(READINGS, f"p{i % 7}", {}))
    second = await asyncio.wait_for(anext(stream), 2)
    waited = time.monotonic() - started
    await stream.aclose()
    assert frames_of(first) == [("rows", {"patients": ["p1"]})]
    [(kind, data)] = frames_of(second)
    assert kind == "rows" and sorted(data["patients"]) == [f"p{i}" for i in range(7)]
    assert 0.3 < waited < 1.0  # held to the end of the tick, not sent 500 times


async def test_alerts_are_passed_on_for_announcement_and_name_their_row() -> None:
    bus = InProcessBus()
    stream = panel_frames(
        bus.subscribe(), never_disconnected, lifetime=1.0, visible=everyone, tick=0.2
    )
    await anext(stream)
    alert = {"id": "a1", "patient_id": "p9", "severity": "critical", "status": "open"}
    await bus.publish(Event(ALERT, "p9", alert))
    frames = frames_of(await asyncio.wait_for(anext(stream), 1))
    frames += frames_of(await asyncio.wait_for(anext(stream), 1))
    await stream.aclose()
    assert ("rows", {"patients": ["p9"]}) in frames
    assert ("alerts", {"alerts": [alert]}) in frames


async def test_a_stream_ends_with_its_session_and_unsubscribes() -> None:
    bus = InProcessBus()
    subscription = bus.subscribe()
    stream = panel_frames(subscription, never_disconnected, lifetime=0.3, visible=everyone)
    received = [frame async for frame in stream]
    assert len(received) == 1  # the greeting, then the end
    await bus.publish(Event(READINGS, "p1", {}))
    assert subscription not in bus._subscriptions


async def test_a_patient_stream_is_cut_after_its_lifetime() -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.05)
            yield b"data\n\n"

    started = time.monotonic()
    frames = [f async for f in for_at_most(endless(), 0.3)]
    assert 0.25 < time.monotonic() - started < 1.0
    assert frames[0].startswith(b"retry:") and b"data\n\n" in frames
