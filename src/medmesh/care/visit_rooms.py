"""The live part of video visits: who is connected to each visit's signalling now, whether
the patient was admitted from the waiting room, and the relay of WebRTC offers, answers and
ICE candidates between the two. In memory, in this process: a deployment with several
processes routes a visit's WebSockets to one of them (docs/visits.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from medmesh.care.visits import Seat
from medmesh.domain.errors import Conflict

Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

REPLACED = 4000  # close code: the same tab reconnected, this socket is stale


@dataclass(eq=False)
class Connection:
    """One participant's WebSocket. `tab` names the browser tab (kept across reconnects), so
    a reconnect replaces its stale socket while a second tab is refused."""

    seat: Seat
    user_id: str
    name: str
    tab: str
    send: Send
    close: Close
    joined_at: datetime
    in_call: bool = False  # both were here and admitted while this socket was open


@dataclass
class Room:
    appointment_id: str
    admitted: bool = False
    seats: dict[Seat, Connection] = field(default_factory=dict)

    def other(self, seat: Seat) -> Connection | None:
        return self.seats.get(Seat.PATIENT if seat is Seat.CLINICIAN else Seat.CLINICIAN)

    @property
    def live(self) -> bool:
        """Both are here and the patient was let in: the call runs."""
        live = self.admitted and len(self.seats) == 2
        if live:
            for connection in self.seats.values():
                connection.in_call = True
        return live


class VisitRooms:
    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()

    def room(self, appointment_id: str) -> Room | None:
        return self._rooms.get(appointment_id)

    async def enter(self, appointment_id: str, connection: Connection, *, admitted: bool) -> Room:
        """Take the seat; Conflict if another tab of the same seat holds it."""
        async with self._lock:
            room = self._rooms.setdefault(appointment_id, Room(appointment_id))
            room.admitted = room.admitted or admitted
            present = room.seats.get(connection.seat)
            if present is not None and present.tab != connection.tab:
                raise Conflict(
                    "you are already in this visit in another tab or window; close that one first"
                )
            room.seats[connection.seat] = connection
        if present is not None:
            await _quietly(present.close(REPLACED, "reconnected"))
        return room

    async def leave(self, appointment_id: str, connection: Connection) -> Room | None:
        """Free the seat if this connection still holds it (not after a reconnect replaced
        it); the room, or None when it was replaced."""
        async with self._lock:
            room = self._rooms.get(appointment_id)
            if room is None or room.seats.get(connection.seat) is not connection:
                return None
            del room.seats[connection.seat]
            if not room.seats:
                self._rooms.pop(appointment_id, None)
        return room

    async def admit(self, appointment_id: str) -> Room | None:
        async with self._lock:
            room = self._rooms.get(appointment_id)
            if room is not None:
                room.admitted = True
            return room


async def _quietly(closing: Awaitable[None]) -> None:
    try:
        await closing
    except Exception:  # the stale socket may be gone already; nothing to do
        return
