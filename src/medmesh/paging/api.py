"""The JSON API of paging: a person's own channels (add, list, reorder, remove, test send),
and the on-call rosters of the caller's organisation (read by its staff, replaced by its
admins, audited)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import record, require_principal, require_role
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Forbidden, InvalidRequest, NotFound
from medmesh.http.deps import DatabaseDep, provided
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.paging.channels import (
    Channel,
    ChannelKind,
    DeliveryFailed,
    checked_target,
    deliver,
    described,
)
from medmesh.paging.pager import PagerSettings
from medmesh.paging.repository import Channels, Rosters
from medmesh.paging.rosters import Shift, ShiftKind, Team
from medmesh.store.users import Users

router = APIRouter(prefix="/api/v1", tags=["paging"], responses=ERROR_RESPONSES)

TEST_TEXT = (
    "medmesh: test page",
    "This is a test of your paging channel. No alert is waiting.\n",
)


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ChannelKind
    target: str = Field(min_length=1, max_length=2000, description="address or apprise URL")
    label: str = Field("", max_length=100)
    test: bool = Field(False, description="send a test page now, and refuse if it fails")


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(max_length=20, description="channel ids, first tried first")


def _person(principal: Principal) -> str:
    if principal.kind is not ActorKind.USER or principal.role is Role.SYSTEM:
        raise Forbidden("paging channels belong to people, not systems")
    return principal.id


def channel_json(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "position": channel.position,
        "kind": channel.kind.value,
        "target": described(channel),
        "label": channel.label,
    }


@router.get("/me/paging-channels", summary="The caller's paging channels, in order")
async def list_channels(
    database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    async with database.read() as conn:
        found = await Channels(conn).of(_person(principal))
    return {"channels": [channel_json(c) for c in found]}


pager_settings_of = provided(PagerSettings)


async def _test_send(channel: Channel, request: Request) -> None:
    try:
        await deliver(channel, *TEST_TEXT, pager_settings_of(request).smtp)
    except DeliveryFailed as failed:
        raise InvalidRequest(f"the test page did not go through ({failed})") from None


@router.post("/me/paging-channels", status_code=201, summary="Add a paging channel (last)")
async def add_channel(
    body: ChannelIn,
    database: DatabaseDep,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    user_id = _person(principal)
    target = checked_target(body.kind, body.target)
    now = datetime.now(UTC)
    if body.test:
        await _test_send(Channel("", user_id, 0, body.kind, target, body.label, now), request)
    async with database.write() as conn:
        channels = Channels(conn)
        if len(await channels.of(user_id)) >= 10:
            raise InvalidRequest("at most 10 paging channels; remove one first")
        added = await channels.add(user_id, body.kind, target, body.label, now)
    return channel_json(added)


@router.post("/me/paging-channels/{channel_id}/test", summary="Send a test page on a channel")
async def test_channel(
    channel_id: str,
    database: DatabaseDep,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    async with database.read() as conn:
        found = [c for c in await Channels(conn).of(_person(principal)) if c.id == channel_id]
    if not found:
        raise NotFound(f"paging channel {channel_id} is not known")
    await _test_send(found[0], request)
    return {"sent": True}


@router.put("/me/paging-channels", summary="Put the caller's channels in a new order")
async def reorder_channels(
    body: OrderIn, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    user_id = _person(principal)
    async with database.write() as conn:
        channels = Channels(conn)
        if sorted(body.channels) != sorted(c.id for c in await channels.of(user_id)):
            raise InvalidRequest("name each of your channels exactly once")
        await channels.reorder(user_id, body.channels)
        found = await channels.of(user_id)
    return {"channels": [channel_json(c) for c in found]}


@router.delete("/me/paging-channels/{channel_id}", status_code=204, summary="Remove a channel")
async def remove_channel(
    channel_id: str, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> None:
    async with database.write() as conn:
        if not await Channels(conn).remove(_person(principal), channel_id):
            raise NotFound(f"paging channel {channel_id} is not known")


# Rosters.


class WeeklyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(max_length=36)
    weekday: int = Field(ge=0, le=6, description="0 Monday … 6 Sunday")
    start: str = Field(max_length=5, description="HH:MM local")
    end: str = Field(max_length=5, description="HH:MM local; at or before start: next day")


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(max_length=36)
    start: datetime
    end: datetime


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", max_length=64)
    lead: str | None = Field(None, max_length=36)
    fallback: str | None = Field(None, max_length=36, description="covers the roster's gaps")
    weekly: list[WeeklyIn] = Field(default_factory=list, max_length=200)
    overrides: list[OverrideIn] = Field(default_factory=list, max_length=200)


def _clock(text: str, field: str) -> time:
    try:
        return time.fromisoformat(text).replace(second=0, microsecond=0)
    except ValueError:
        raise InvalidRequest(f"{field} must be a time of day, e.g. 20:00") from None


def _staff(principal: Principal) -> None:
    require_role(principal, Role.CLINICIAN, Role.ORG_ADMIN)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def team_json(team: Team, start: datetime, days: int, now: datetime) -> dict[str, Any]:
    end = start + timedelta(days=days)
    return {
        "id": team.id,
        "name": team.name,
        "timezone": team.timezone,
        "lead": team.lead_id,
        "fallback": team.fallback_id,
        "weekly": [
            {
                "user": s.user_id,
                "weekday": s.weekday,
                "start": s.start.isoformat("minutes") if s.start else None,
                "end": s.end.isoformat("minutes") if s.end else None,
            }
            for s in team.shifts
            if s.kind is ShiftKind.WEEKLY
        ],
        "overrides": [
            {"user": s.user_id, "start": _instant(s.starts_at), "end": _instant(s.ends_at)}
            for s in team.shifts
            if s.kind is ShiftKind.OVERRIDE and s.starts_at and s.ends_at
        ],
        "on_call_now": team.on_call(now),
        "gaps": [{"start": _instant(a), "end": _instant(b)} for a, b in team.gaps(start, end)],
    }


@router.get("/oncall/teams", summary="The on-call teams of the caller's organisation")
async def list_teams(
    database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    _staff(principal)
    now = datetime.now(UTC)
    async with database.read() as conn:
        teams = await Rosters(conn).teams(principal.organization_id)
    return {"teams": [team_json(t, now, 7, now) for t in teams]}


@router.get("/oncall/teams/{name}", summary="A team's roster, who is on call now, its gaps")
async def read_team(
    name: str,
    database: DatabaseDep,
    start: date | None = None,
    days: int = Query(7, ge=1, le=62),
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    _staff(principal)
    async with database.read() as conn:
        team = await Rosters(conn).team(principal.organization_id, name)
    if team is None:
        raise NotFound(f"team {name} is not known")
    now = datetime.now(UTC)
    begin = datetime.combine(start, time(0), team.zone) if start else now
    return team_json(team, begin, days, now)


@router.put("/oncall/teams/{name}", summary="Create or replace a team and its roster")
async def put_team(
    name: str,
    body: TeamIn,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    if principal.role is not Role.ORG_ADMIN:
        await _audit(request, principal, name, permitted=False)
        raise Forbidden("only an organisation admin edits on-call rosters")
    if not 1 <= len(name) <= 100:
        raise InvalidRequest("a team name has 1 to 100 characters")
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("timezone must be an IANA time zone, e.g. Europe/Berlin") from None
    shifts = [
        Shift(w.user, ShiftKind.WEEKLY, w.weekday, _clock(w.start, "start"), _clock(w.end, "end"))
        for w in body.weekly
    ]
    for o in body.overrides:
        if o.start.tzinfo is None or o.end.tzinfo is None:
            raise InvalidRequest("an override's start and end need a time zone offset")
        if o.end <= o.start:
            raise InvalidRequest("an override ends after it starts")
        shifts.append(Shift(o.user, ShiftKind.OVERRIDE, starts_at=o.start, ends_at=o.end))
    now = datetime.now(UTC)
    async with database.write() as conn:
        users = Users(conn)
        named = {s.user_id for s in shifts} | {u for u in (body.lead, body.fallback) if u}
        for user_id in sorted(named):
            found = await users.get(user_id)
            if (
                found is None
                or found.organization_id != principal.organization_id
                or found.role == Role.PATIENT.value
            ):
                raise InvalidRequest(f"user {user_id} is not staff of your organisation")
        team = Team(
            "",
            principal.organization_id,
            name,
            body.timezone,
            body.lead,
            body.fallback,
            tuple(shifts),
        )
        saved = await Rosters(conn).save(team, principal.id, now)
    await _audit(request, principal, saved.id, permitted=True)
    return team_json(saved, now, 7, now)


async def _audit(request: Request, principal: Principal, team: str, *, permitted: bool) -> None:
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
