"""Who may join a video visit and when, TURN credentials in coturn's REST scheme, and the
room's seats: a reconnect from the same tab takes its seat back, a second tab is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from medmesh.care.visit_rooms import REPLACED, Connection, VisitRooms
from medmesh.care.visits import (
    IceConfig,
    Seat,
    TooEarly,
    VisitOver,
    check_open,
    ice_servers,
    seat_of,
    turn_credential,
)
from medmesh.domain.appointments import Appointment, AppointmentStatus, VisitKind
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
EARLY = timedelta(minutes=15)
VISIT = Appointment(
    id="a1",
    schedule_id="s1",
    clinician_id="ada",
    clinician_name="Dr Ada",
    patient_id="p1",
    start=START,
    end=START + timedelta(minutes=30),
    kind=VisitKind.VIDEO,
    status=AppointmentStatus.BOOKED,
    reason=None,
    booked_at=START - timedelta(days=1),
    booked_by="p1",
)


def test_the_visit_opens_a_little_before_its_start_and_closes_at_its_end() -> None:
    with pytest.raises(TooEarly, match="opens 15 minutes before"):
        check_open(VISIT, START - EARLY - timedelta(seconds=1), EARLY)
    check_open(VISIT, START - EARLY, EARLY)
    check_open(VISIT, VISIT.end - timedelta(seconds=1), EARLY)
    with pytest.raises(VisitOver, match="has ended"):
        check_open(VISIT, VISIT.end, EARLY)


def test_cancelled_and_in_person_appointments_have_no_video_visit() -> None:
    with pytest.raises(VisitOver, match="cancelled"):
        check_open(replace(VISIT, status=AppointmentStatus.CANCELLED), START, EARLY)
    with pytest.raises(InvalidRequest, match="in person"):
        check_open(replace(VISIT, kind=VisitKind.IN_PERSON), START, EARLY)


def test_only_the_appointments_clinician_and_patient_have_a_seat() -> None:
    assert seat_of(VISIT, "ada", None) is Seat.CLINICIAN
    assert seat_of(VISIT, "jane", "p1") is Seat.PATIENT
    with pytest.raises(Forbidden, match="not yours"):
        seat_of(VISIT, "bob", None)  # a colleague of the care team
    with pytest.raises(Forbidden, match="not yours"):
        seat_of(VISIT, "rick", "p2")


def test_turn_credentials_follow_coturns_rest_scheme_and_expire() -> None:
    expires = START + timedelta(hours=1)
    username, credential = turn_credential("s3cret", "ada", expires)
    assert username == f"{int(expires.timestamp())}:ada"
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_ice_servers_are_none_on_loopback_and_stun_plus_turn_when_configured() -> None:
    assert ice_servers(IceConfig((), (), None, timedelta(hours=1)), "ada", START) == []
    config = IceConfig(("stun:turn.example.org",), ("turn:turn.example.org",), "k", EARLY)
    stun, turn = ice_servers(config, "ada", START)
    assert stun == {"urls": ["stun:turn.example.org"]}
    assert turn["username"].startswith(str(int((START + EARLY).timestamp())))


def _connection(seat: Seat, tab: str, closed: list[int]) -> Connection:
    async def send(message: dict[str, object]) -> None:
        return None

    async def close(code: int, reason: str) -> None:
        closed.append(code)

    return Connection(seat, "u", "name", tab, send, close, START)


async def test_a_reconnect_from_the_same_tab_takes_the_seat_a_second_tab_is_refused() -> None:
    rooms, closed = VisitRooms(), []
    first = _connection(Seat.PATIENT, "tab-1", closed)
    await rooms.enter("a1", first, admitted=False)
    with pytest.raises(Conflict, match="another tab"):
        await rooms.enter("a1", _connection(Seat.PATIENT, "tab-2", closed), admitted=False)
    again = _connection(Seat.PATIENT, "tab-1", closed)
    room = await rooms.enter("a1", again, admitted=False)
    assert closed == [REPLACED]
    assert await rooms.leave("a1", first) is None  # the stale socket frees nothing
    assert room.seats[Seat.PATIENT] is again
    await rooms.admit("a1")
    await rooms.enter("a1", _connection(Seat.CLINICIAN, "tab-9", closed), admitted=False)
    assert room.live and again.in_call
    assert await rooms.leave("a1", again) is room
    assert not room.live
