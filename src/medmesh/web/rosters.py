"""On-call rosters in the dashboard: who is on call now (a panel on the patient panel), a
team's week as a calendar with its gaps highlighted, and the form organisation admins edit it
with (each change audited, like the JSON API's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import record
from medmesh.access.identity.principals import Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import NotFound
from medmesh.http.deps import DatabaseDep
from medmesh.paging.repository import Rosters
from medmesh.paging.rosters import Shift, ShiftKind, Team
from medmesh.web import session
from medmesh.web.access import principal_of
from medmesh.web.responses import WebRoute, problem
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class OnCallNow:
    team: str
    people: list[str]  # display names; empty: a gap
    fallback: str | None


async def on_call_now(
    conn: AsyncConnection, organization_id: str, now: datetime
) -> list[OnCallNow]:
    """For the patient panel's "on call now" box."""
    rosters = Rosters(conn)
    names = await rosters.staff(organization_id)
    found = []
    for team in await rosters.teams(organization_id):
        people = [names.get(u, "someone") for u in team.on_call(now)]
        backup = team.fallback_id or team.lead_id
        found.append(OnCallNow(team.name, people, names.get(backup) if backup else None))
    return found


@dataclass(frozen=True, slots=True)
class Block:
    start: str  # local HH:MM
    end: str
    people: list[str]

    @property
    def gap(self) -> bool:
        return not self.people


def _calendar(team: Team, names: dict[str, str], first: date) -> list[tuple[date, list[Block]]]:
    zone = team.zone
    days = []
    for offset in range(7):
        day = first + timedelta(days=offset)
        start = datetime.combine(day, time(0), zone)
        end = datetime.combine(day + timedelta(days=1), time(0), zone)
        blocks = [
            Block(
                a.astimezone(zone).strftime("%H:%M"),
                "24:00" if b == end else b.astimezone(zone).strftime("%H:%M"),
                [names.get(u, "someone") for u in who],
            )
            for a, b, who in team.segments(start, end)
        ]
        days.append((day, blocks))
    return days


def _week_start(raw: str | None, zone: ZoneInfo) -> date:
    try:
        return date.fromisoformat(raw) if raw else datetime.now(zone).date()
    except ValueError:
        return datetime.now(zone).date()


async def _context(
    database: DatabaseDep, user: session.SessionUser, name: str, week: str | None
) -> dict[str, Any]:
    async with database.read() as conn:
        rosters = Rosters(conn)
        team = await rosters.team(user.organization_id, name)
        names = await rosters.staff(user.organization_id)
    if team is None:
        raise NotFound(f"team {name} is not known")
    first = _week_start(week, team.zone)
    return {
        "clinician": user,
        "team": team,
        "names": names,
        "days": _calendar(team, names, first),
        "previous": (first - timedelta(days=7)).isoformat(),
        "next": (first + timedelta(days=7)).isoformat(),
        "weekdays": WEEKDAYS,
        "on_call": [names.get(u, "someone") for u in team.on_call(datetime.now(UTC))],
        "is_admin": user.role is Role.ORG_ADMIN,
        "error": None,
    }


@router.get("/rosters")
async def rosters_page(request: Request, database: DatabaseDep) -> Response:
    user = await session.signed_in(request)
    async with database.read() as conn:
        teams = await Rosters(conn).teams(user.organization_id)
        now = await on_call_now(conn, user.organization_id, datetime.now(UTC))
    context = {
        "clinician": user,
        "teams": teams,
        "now": now,
        "is_admin": user.role is Role.ORG_ADMIN,
    }
    return page(request, "rosters.html", context)


@router.get("/rosters/{name}")
async def roster_page(request: Request, name: str, database: DatabaseDep) -> Response:
    user = await session.signed_in(request)
    context = await _context(database, user, name, request.query_params.get("week"))
    return page(request, "roster.html", context)


def _clock(value: object) -> time | None:
    try:
        return time.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _local(value: object, zone: ZoneInfo) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=zone) if value else None
    except ValueError:
        return None


@router.post("/rosters")
async def create_roster(request: Request, database: DatabaseDep) -> Response:
    name = (await request.form()).get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100 or "/" in name:
        return problem(request, 400, "Team name", "Give the team a name of 1 to 100 characters.")
    return await edit_roster(request, name.strip(), database)


@router.post("/rosters/{name}")
async def edit_roster(request: Request, name: str, database: DatabaseDep) -> Response:
    """One change a post: create the team, add a weekly shift or an override, remove one."""
    await session.check_csrf(request)
    user = await session.signed_in(request)
    principal = principal_of(request, user)
    if user.role is not Role.ORG_ADMIN:
        await _audit(request, principal, name, permitted=False)
        return problem(request, 403, "Not allowed", "Only an organisation admin edits rosters.")
    form = await request.form()
    async with database.read() as conn:
        rosters = Rosters(conn)
        team = await rosters.team(user.organization_id, name)
        names = await rosters.staff(user.organization_id)
    zone_name = str(form.get("timezone") or (team.timezone if team else "UTC"))
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return problem(request, 400, "Time zone", "Give an IANA time zone, e.g. Europe/Berlin.")
    shifts = list(team.shifts) if team else []
    action = form.get("action")
    person = str(form.get("user") or "")
    if action in ("weekly", "override") and person not in names:
        return problem(request, 400, "Who covers", "Choose a clinician of your organisation.")
    if action == "weekly":
        start, end = _clock(form.get("start")), _clock(form.get("end"))
        day = str(form.get("weekday") or "")
        if start is None or end is None or not day.isdigit() or not 0 <= int(day) <= 6:
            return problem(request, 400, "Shift", "Give a weekday and a start and end time.")
        shifts.append(Shift(person, ShiftKind.WEEKLY, int(day), start, end))
    elif action == "override":
        begin, finish = _local(form.get("starts_at"), zone), _local(form.get("ends_at"), zone)
        if begin is None or finish is None or finish <= begin:
            return problem(request, 400, "Override", "Give a start and an end after it.")
        shifts.append(Shift(person, ShiftKind.OVERRIDE, starts_at=begin, ends_at=finish))
    elif action == "remove":
        index = str(form.get("index") or "")
        if index.isdigit() and int(index) < len(shifts):
            shifts.pop(int(index))
    lead = str(form.get("lead") or (team.lead_id if team else "") or "") or None
    fallback = str(form.get("fallback") or (team.fallback_id if team else "") or "") or None
    if any(u is not None and u not in names for u in (lead, fallback)):
        return problem(request, 400, "Lead", "Choose a clinician of your organisation.")
    changed = Team("", user.organization_id, name[:100], zone_name, lead, fallback, tuple(shifts))
    async with database.write() as conn:
        saved = await Rosters(conn).save(changed, user.user_id, datetime.now(UTC))
    await _audit(request, principal, saved.id, permitted=True)
    return RedirectResponse(f"/rosters/{quote(name)}", status_code=303)


async def _audit(request: Request, principal: Any, team: str, *, permitted: bool) -> None:
    await record(
        request,
        principal,
        interaction=Interaction.UPDATE,
        permitted=permitted,
        patient_id=None,
        resource_type="Schedule",
        subtype="update",
        basis="org-admin" if permitted else "not-org-admin",
        resource_id=f"oncall/{team}"[:64],
    )
