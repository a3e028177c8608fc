"""A person's own notification settings: the email address, on or off, quiet hours. Only the
signed-in person reads and changes theirs; nothing here is about a patient's record."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import require_principal
from medmesh.access.identity.principals import ActorKind, Principal
from medmesh.domain.errors import Forbidden, InvalidRequest
from medmesh.domain.notifications import Preferences
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.notifications import Notifications

router = APIRouter(prefix="/api/v1", tags=["notifications"], responses=ERROR_RESPONSES)

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    email_enabled: bool = True
    quiet_start: str | None = Field(None, max_length=5, description="HH:MM, local")
    quiet_end: str | None = Field(None, max_length=5, description="HH:MM, local")
    timezone: str = Field("UTC", max_length=64)


def _clock(text: str | None, field: str) -> time | None:
    if text is None or text == "":
        return None
    try:
        return time.fromisoformat(text).replace(second=0, microsecond=0)
    except ValueError:
        raise InvalidRequest(f"{field} must be a time of day, e.g. 22:00") from None


def preferences_json(preferences: Preferences | None) -> dict[str, Any]:
    if preferences is None:
        return {
            "email": None,
            "email_enabled": False,
            "quiet_start": None,
            "quiet_end": None,
            "timezone": "UTC",
        }
    return {
        "email": preferences.email,
        "email_enabled": preferences.email_enabled,
        "quiet_start": preferences.quiet_start.isoformat("minutes")
        if preferences.quiet_start
        else None,
        "quiet_end": preferences.quiet_end.isoformat("minutes") if preferences.quiet_end else None,
        "timezone": preferences.timezone,
    }


def _person(principal: Principal) -> str:
    if principal.kind is not ActorKind.USER:
        raise Forbidden("notification settings belong to people, not systems")
    return principal.id


@router.get("/me/notifications", summary="The caller's notification settings")
async def read_preferences(
    database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    async with database.read() as conn:
        return preferences_json(await Notifications(conn).preferences(_person(principal)))


@router.put("/me/notifications", summary="Change the caller's notification settings")
async def put_preferences(
    body: PreferencesIn, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    user_id = _person(principal)
    email = (body.email or "").strip() or None
    if email is not None and not _EMAIL.fullmatch(email):
        raise InvalidRequest("email is not an email address")
    if body.email_enabled and email is None:
        raise InvalidRequest("give an email address to receive notifications by email")
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("timezone must be an IANA time zone, e.g. Europe/Berlin") from None
    start, end = _clock(body.quiet_start, "quiet_start"), _clock(body.quiet_end, "quiet_end")
    if (start is None) != (end is None):
        raise InvalidRequest("give both quiet_start and quiet_end, or neither")
    preferences = Preferences(user_id, email, body.email_enabled, start, end, body.timezone)
    async with database.write() as conn:
        await Notifications(conn).set_preferences(preferences, datetime.now(UTC))
    return preferences_json(preferences)
