"""The video visit in the browser: the page (video, waiting room, chat; for the clinician the
patient's latest vitals and the visit note) and its signalling WebSocket.

The WebSocket admits the appointment's two participants only, each with their own signed-in
session, from `visit_join_early_minutes` before the start until the end; every join is decided
by the policy and audited. A refusal is sent as `{"type": "error", "message": ...}` and the
socket closed with a 44xx code. The server relays offers, answers and ICE candidates between
the two once the clinician has admitted the patient; media flow browser to browser.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import RedirectResponse

from medmesh.access.http import record
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import visits as care_visits
from medmesh.care.visit_rooms import Connection, Room, Send, VisitRooms
from medmesh.care.visits import IceConfig, Seat
from medmesh.domain.appointments import Appointment
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from medmesh.http.deps import bus_of, database_of, provided, settings_of
from medmesh.store.appointments import Appointments
from medmesh.store.registry import Patients
from medmesh.store.visits import Visits
from medmesh.store.vitals import Vitals
from medmesh.web import session
from medmesh.web.access import care_principal
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, SignInRequired
from medmesh.web.templating import page
from medmesh.web.vitals import PANEL_VITALS, shown

router = APIRouter(route_class=WebRoute, include_in_schema=False)
sockets = APIRouter(include_in_schema=False)

RESOURCE = "Appointment"  # joining a visit updates the appointment (arrived, in progress)
MAX_FRAME_CHARS = 64_000  # an SDP offer with many candidates stays well below
NOT_YOURS = "this video visit is not yours: only its patient and clinician may join"
RELAYED = frozenset({"offer", "answer", "candidate", "media"})

rooms_of = provided(VisitRooms)
ice_config_of = provided(IceConfig)


def _early(request: Request) -> timedelta:
    return timedelta(minutes=settings_of(request).visit_join_early_minutes)


async def _participant(
    request: Request, user: SessionUser, appointment_id: str
) -> tuple[Appointment, Seat, Principal]:
    """The appointment and the caller's seat in it: the policy decides (audited), then only
    its patient and its clinician take part."""
    async with database_of(request).read() as conn:
        appointment = await Appointments(conn).get(appointment_id)
    if appointment is None:
        raise NotFound("this video visit does not exist, or is not yours")
    principal = care_principal(request, user)
    try:
        await care_access.decide(
            request,
            principal,
            appointment.patient_id,
            RESOURCE,
            Interaction.UPDATE,
            resource_id=appointment.id,
            refusal=NOT_YOURS,
        )
    except Forbidden:
        raise Forbidden(NOT_YOURS) from None
    try:
        seat = care_visits.seat_of(appointment, user.user_id, user.patient_id)
    except Forbidden:
        await record(
            request,
            principal,
            interaction=Interaction.UPDATE,
            permitted=False,
            patient_id=appointment.patient_id,
            resource_type=RESOURCE,
            subtype="update",
            basis="not-a-participant",
            resource_id=appointment.id,
        )
        raise
    return appointment, seat, principal


async def _vitals(request: Request, patient_id: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    async with database_of(request).read() as conn:
        latest = await Vitals(conn).latest([patient_id], [c for v in PANEL_VITALS for c in v.codes])
    found = []
    for vital in PANEL_VITALS:
        value = shown(vital, patient_id, latest, now)
        found.append({"vital": vital, "value": value})
    return found


@router.get("/visits/{appointment_id}")
async def visit_page(appointment_id: str, request: Request) -> Response:
    user = await session.current_user(request, touch=True)
    appointment, seat, _ = await _participant(request, user, appointment_id)
    context: dict[str, Any] = {
        "user": user,
        "nav": "visit",
        "appointment": appointment,
        "seat": seat.value,
        "ice_servers": json.dumps(
            care_visits.ice_servers(ice_config_of(request), user.user_id, datetime.now(UTC))
        ),
        "opens_at": appointment.start - _early(request),
    }
    if user.is_staff:
        context["clinician"] = user
    if seat is Seat.CLINICIAN:
        async with database_of(request).read() as conn:
            patient = await Patients(conn).get(appointment.patient_id)
            visit = await Visits(conn).get(appointment.id)
        context["patient"] = patient
        context["note"] = visit.note if visit is not None else None
        context["vitals"] = await _vitals(request, appointment.patient_id)
    return page(request, "visit.html", context)


@router.post("/visits/{appointment_id}/note")
async def save_note(appointment_id: str, request: Request) -> Response:
    await session.check_csrf(request)
    user = await session.current_user(request, touch=True)
    form = await request.form()
    note = form.get("note")
    appointment, seat, principal = await _participant(request, user, appointment_id)
    if seat is not Seat.CLINICIAN:
        raise Forbidden("only the clinician writes the visit note")
    await care_visits.write_note(
        database_of(request),
        appointment,
        by=principal,
        note=note if isinstance(note, str) else "",
        at=datetime.now(UTC),
    )
    return RedirectResponse(f"/visits/{appointment.id}#note", status_code=303)


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    await websocket.send_json({"type": "error", "message": message})
    await websocket.close(code=code, reason=message[:120])


def _sender(websocket: WebSocket) -> Send:
    """Send to this socket; a socket that has gone is left to its own handler to close."""

    async def send(message: dict[str, Any]) -> None:
        try:
            await websocket.send_json(message)
        except (WebSocketDisconnect, RuntimeError):
            return

    return send


def _same_origin(websocket: WebSocket) -> bool:
    """Browsers send Origin on WebSockets, and the cookie goes along from any site: refuse
    another site's page (cross-site WebSocket hijacking)."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    if origin is None or host is None:
        return False
    return origin.split("://", 1)[-1] == host


async def _announce_state(room: Room) -> None:
    """Tell each side where the visit stands: waiting (patient), knocking (clinician), or
    live (both; the clinician then makes the offer)."""
    clinician, patient = room.seats.get(Seat.CLINICIAN), room.seats.get(Seat.PATIENT)
    if room.live and clinician is not None and patient is not None:
        await patient.send({"type": "start", "peer": clinician.name, "offerer": False})
        await clinician.send({"type": "start", "peer": patient.name, "offerer": True})
        return
    if patient is not None:
        state = "admitted" if room.admitted else "waiting"
        await patient.send({"type": state, "clinician_here": clinician is not None})
    if clinician is not None:
        if patient is None:
            await clinician.send({"type": "alone"})
        elif not room.admitted:
            await clinician.send({"type": "knock", "name": patient.name})


@sockets.websocket("/visits/{appointment_id}/signal")
async def signal(websocket: WebSocket, appointment_id: str, tab: str = "") -> None:
    request = cast(Request, websocket)  # the same session, app and client as a request
    await websocket.accept()
    if not _same_origin(websocket):
        await _refuse(websocket, 4403, "this page may not open the visit")
        return
    now = datetime.now(UTC)
    try:
        user = await session.current_user(request, touch=True)
        appointment, seat, principal = await _participant(request, user, appointment_id)
        care_visits.check_open(appointment, now, _early(request))
        if not tab or len(tab) > 64:
            raise InvalidRequest("the page did not name its tab; reload it")
        visit = await care_visits.joined(database_of(request), appointment, now)
        connection = Connection(
            seat=seat,
            user_id=user.user_id,
            name=user.display_name,
            tab=tab,
            send=_sender(websocket),
            close=lambda code, reason: websocket.close(code=code, reason=reason),
            joined_at=now,
        )
        room = await rooms_of(request).enter(
            appointment.id, connection, admitted=visit.admitted_at is not None
        )
    except SignInRequired:
        await _refuse(websocket, 4401, "your session has ended; sign in again")
        return
    except (Forbidden, NotFound) as refusal:
        await _refuse(websocket, 4403, str(refusal))
        return
    except Conflict as refusal:
        await _refuse(websocket, 4409, str(refusal))
        return
    except InvalidRequest as refusal:
        await _refuse(websocket, 4400, str(refusal))
        return
    await _announce_state(room)
    try:
        await _relay(request, websocket, appointment, connection, principal, room)
    except WebSocketDisconnect:
        pass
    finally:
        left = await rooms_of(request).leave(appointment.id, connection)
        if left is not None:
            other = left.other(seat)
            if other is not None:
                await other.send({"type": "peer-left"})
        if seat is Seat.CLINICIAN:
            await care_visits.clinician_left(
                database_of(request),
                appointment,
                clinician=principal,
                joined_at=now,
                left_at=datetime.now(UTC),
                with_patient=connection.in_call or room.live,
            )


async def _relay(
    request: Request,
    websocket: WebSocket,
    appointment: Appointment,
    connection: Connection,
    principal: Principal,
    room: Room,
) -> None:
    """Pass messages until the socket closes or the visit ends."""
    while True:
        text = await websocket.receive_text()
        if datetime.now(UTC) >= appointment.end:
            await _refuse(websocket, 4400, "this visit has ended")
            return
        if len(text) > MAX_FRAME_CHARS:
            await websocket.send_json({"type": "error", "message": "this message is too large"})
            continue
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in RELAYED:
            other = room.other(connection.seat)
            if room.live and other is not None:
                await other.send({"type": kind, "data": message.get("data")})
        elif kind == "admit" and connection.seat is Seat.CLINICIAN:
            await rooms_of(request).admit(appointment.id)
            await care_visits.admitted(database_of(request), appointment, datetime.now(UTC))
            await _announce_state(room)
        elif kind == "chat":
            try:
                await care_visits.chat(
                    database_of(request),
                    bus_of(request),
                    appointment,
                    sender=principal,
                    text=message.get("text"),
                    at=datetime.now(UTC),
                )
            except InvalidRequest as refusal:
                await websocket.send_json({"type": "error", "message": str(refusal)})
                continue
            line = {"type": "chat", "from": connection.name, "text": message.get("text")}
            for seat in room.seats.values():
                await seat.send(line)
        elif kind == "ping":
            await websocket.send_json({"type": "pong"})
        else:
            await websocket.send_json(
                {"type": "error", "message": "unknown message; expected offer, answer, chat…"}
            )
