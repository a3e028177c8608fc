"""Video visits: who may join an appointment's visit and when, the ICE servers a browser gets
(with time-limited TURN credentials in coturn's REST scheme), and the visit's lasting records
(the visit row, its chat kept with the messages, the note, the clinician's time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from medmesh.access.identity.principals import Principal
from medmesh.care import messages as care_messages
from medmesh.domain.appointments import Appointment, AppointmentStatus, VisitKind
from medmesh.domain.errors import Forbidden, InvalidRequest
from medmesh.domain.messages import MessageCategory
from medmesh.domain.visits import TimeEntry, TimeKind, Visit
from medmesh.events.bus import EventBus
from medmesh.store.database import Database
from medmesh.store.messages import Messages
from medmesh.store.visits import TimeEntries, Visits

MAX_NOTE_CHARS = 20_000
MAX_CHAT_CHARS = 2_000


class Seat(StrEnum):
    CLINICIAN = "clinician"
    PATIENT = "patient"


class TooEarly(InvalidRequest):
    """The visit opens later."""


class VisitOver(InvalidRequest):
    """The appointment has ended (or was cancelled)."""


def seat_of(appointment: Appointment, user_id: str, patient_id: str | None) -> Seat:
    """The participant's place in the visit; Forbidden for anyone else (a colleague of the
    care team too: a visit has two participants)."""
    if user_id == appointment.clinician_id:
        return Seat.CLINICIAN
    if patient_id is not None and patient_id == appointment.patient_id:
        return Seat.PATIENT
    raise Forbidden("this video visit is not yours: only its patient and clinician may join")


def check_open(appointment: Appointment, now: datetime, early: timedelta) -> None:
    """Refuse a join outside [start - early, end), or of a visit that is not a video one."""
    if appointment.kind is not VisitKind.VIDEO:
        raise InvalidRequest("this appointment is in person, not a video visit")
    if appointment.status is AppointmentStatus.CANCELLED:
        raise VisitOver("this appointment was cancelled")
    if now < appointment.start - early:
        minutes = int(early.total_seconds() // 60)
        raise TooEarly(
            f"the visit opens {minutes} minutes before it starts "
            f"({appointment.start.isoformat(timespec='minutes')}); please come back then"
        )
    if now >= appointment.end:
        raise VisitOver("this visit has ended")


@dataclass(frozen=True, slots=True)
class IceConfig:
    stun_urls: Sequence[str]
    turn_urls: Sequence[str]
    turn_secret: str | None
    turn_ttl: timedelta


def turn_credential(secret: str, user_id: str, expires: datetime) -> tuple[str, str]:
    """coturn's `use-auth-secret` (TURN REST API) credential: the user name is the expiry
    (Unix seconds) and an id, the password the base64 HMAC-SHA1 of the user name."""
    username = f"{int(expires.timestamp())}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: IceConfig, user_id: str, now: datetime) -> list[dict[str, Any]]:
    """RTCPeerConnection's iceServers for this participant. None configured: host candidates
    only, which is enough on loopback and a LAN."""
    servers: list[dict[str, Any]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls and config.turn_secret:
        username, credential = turn_credential(config.turn_secret, user_id, now + config.turn_ttl)
        servers.append(
            {"urls": list(config.turn_urls), "username": username, "credential": credential}
        )
    return servers


async def joined(database: Database, appointment: Appointment, at: datetime) -> Visit:
    async with database.write() as conn:
        return await Visits(conn).begin(
            Visit(
                appointment_id=appointment.id,
                patient_id=appointment.patient_id,
                clinician_id=appointment.clinician_id,
                started_at=at,
            )
        )


async def admitted(database: Database, appointment: Appointment, at: datetime) -> None:
    async with database.write() as conn:
        await Visits(conn).admitted(appointment.id, at)


async def clinician_left(
    database: Database,
    appointment: Appointment,
    *,
    clinician: Principal,
    joined_at: datetime,
    left_at: datetime,
    with_patient: bool,
) -> TimeEntry | None:
    """The visit's end for now, and the clinician's time in it as a `visit` entry (a
    reconnect makes a second, adjacent entry; an overlap with an earlier one is clipped)."""
    async with database.write() as conn:
        await Visits(conn).left(appointment.id, left_at)
        earlier = await TimeEntries(conn).search(
            clinician_id=clinician.id, start=joined_at, end=left_at
        )
        start = max([joined_at, *(e.end for e in earlier)])
        if left_at - start < timedelta(seconds=1):
            return None
        entry = TimeEntry(
            id=str(uuid.uuid4()),
            patient_id=appointment.patient_id,
            clinician_id=clinician.id,
            clinician_name=clinician.name,
            kind=TimeKind.VISIT,
            start=start,
            end=left_at,
            interactive=with_patient,
            reason=None,
            source_id=appointment.id,
            created_at=left_at,
            updated_at=left_at,
            updated_by=clinician.id,
        )
        await TimeEntries(conn).add(entry)
    return entry


def chat_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("the chat message is empty")
    if len(text) > MAX_CHAT_CHARS:
        raise InvalidRequest(f"a chat message is at most {MAX_CHAT_CHARS} characters")
    return care_messages.message_text(text)


async def chat(
    database: Database,
    bus: EventBus,
    appointment: Appointment,
    *,
    sender: Principal,
    text: str,
    at: datetime,
) -> None:
    """Keep a chat line with the patient's messages: the visit's own thread, begun by the
    first line."""
    body = chat_text(text)
    async with database.read() as conn:
        visit = await Visits(conn).get(appointment.id)
        thread = (
            None
            if visit is None or visit.chat_thread_id is None
            else await Messages(conn).thread(visit.chat_thread_id)
        )
    if thread is not None:
        await care_messages.reply(
            database, bus, thread=thread, sender=sender, body=body, attachments=(), at=at
        )
        return
    day = appointment.start.date().isoformat()
    thread, _ = await care_messages.start_thread(
        database,
        bus,
        patient_id=appointment.patient_id,
        sender=sender,
        subject=f"Video visit chat, {day}",
        category=MessageCategory.APPOINTMENT,
        body=body,
        attachments=(),
        at=at,
    )
    async with database.write() as conn:
        await Visits(conn).set_chat_thread(appointment.id, thread.id)


async def write_note(
    database: Database, appointment: Appointment, *, by: Principal, note: str, at: datetime
) -> Visit:
    """The clinician's note, during or after the visit (the one who held it)."""
    if by.id != appointment.clinician_id:
        raise Forbidden("only the clinician who held the visit writes its note")
    text = note.strip()
    if not text:
        raise InvalidRequest("the note is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise InvalidRequest(f"the note is longer than {MAX_NOTE_CHARS} characters")
    async with database.write() as conn:
        visits = Visits(conn)
        visit = await visits.get(appointment.id)
        if visit is None:
            raise InvalidRequest("this visit has not taken place yet")
        await visits.write_note(visit, text, at)
        found = await visits.get(appointment.id)
    assert found is not None
    return found
