"""Dashboard sessions: a signed, HttpOnly, SameSite=Strict cookie (Starlette's
SessionMiddleware) that holds the clinician's API token id and name, a CSRF token, and when the
session began and when the clinician last did something. Nothing else, and no health data.

Until accounts exist, a clinician signs in with an API token (role clinician or admin). The
session ends after `session_idle_minutes` without user activity, after `MAX_SESSION` in any
case, and as soon as its token is revoked.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request

from medmesh.access.credentials import hash_secret
from medmesh.access.principals import Role
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.tokens import ApiTokenRecord, ApiTokens

SESSION_COOKIE = "medmesh_session"
MAX_SESSION = timedelta(hours=12)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_READERS = {Role.CLINICIAN.value, Role.SYSTEM.value}


@dataclass(frozen=True, slots=True)
class Clinician:
    token_id: str
    name: str


class SignInRequired(Exception):
    """No session, or one that has ended. Not a MedmeshError: the web routes answer it with
    the sign-in page, not the API's OperationOutcome."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("sign-in required")
        self.expired = expired


class CsrfRejected(Exception):
    """A state-changing request without this session's CSRF token."""


def middleware_options(settings: Settings) -> dict[str, Any]:
    """Arguments of SessionMiddleware. Without a configured secret each process draws its own:
    sessions then end when the process does and work with one process only."""
    secret = (
        settings.session_secret.get_secret_value()
        if settings.session_secret is not None
        else secrets.token_urlsafe(32)
    )
    return {
        "secret_key": secret,
        "session_cookie": SESSION_COOKIE,
        "max_age": None,  # a browser-session cookie; the idle and absolute limits are ours
        "same_site": "strict",
        "https_only": settings.session_https_only,
    }


def signed_in_identity(session: Mapping[str, Any]) -> str | None:
    """Who a session belongs to, for rate limiting (None before sign-in); not a check that
    the session is still valid."""
    token_id = session.get("tid")
    return token_id if isinstance(token_id, str) else None


def now() -> float:
    """The clock sessions are measured by (tests move it)."""
    return time.time()


def idle_seconds(request: Request) -> float:
    settings: Settings = request.app.state.settings
    return settings.session_idle_minutes * 60.0


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created with the session (also before sign-in, for the
    sign-in form itself)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """Accept the token from the htmx header or the form field; raise CsrfRejected if neither
    matches the session's."""
    expected = request.session.get("csrf")
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        field = (await request.form()).get(CSRF_FIELD)
        submitted = field if isinstance(field, str) else None
    if not isinstance(expected, str) or not submitted:
        raise CsrfRejected
    if not secrets.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfRejected


async def authenticate(database: Database, token: str) -> ApiTokenRecord | None:
    """The token's record if it may sign in to the dashboard."""
    if not token.strip():
        return None
    async with database.read() as conn:
        record = await ApiTokens(conn).find_by_hash(hash_secret(token.strip()))
    if record is None or record.revoked or record.role not in _READERS:
        return None
    return record


def sign_in(request: Request, record: ApiTokenRecord) -> None:
    """A new session (new CSRF token too, so nothing from before sign-in carries over)."""
    request.session.clear()
    moment = int(now())
    request.session.update(
        tid=record.id,
        name=record.name,
        csrf=secrets.token_urlsafe(32),
        since=moment,
        seen=moment,
    )


def sign_out(request: Request) -> None:
    request.session.clear()


async def current_clinician(request: Request, *, touch: bool) -> Clinician:
    """The signed-in clinician, or SignInRequired. `touch` marks the request as the
    clinician's own doing, which keeps the session alive; background refreshes (live updates)
    do not."""
    session = request.session
    token_id, name = session.get("tid"), session.get("name")
    since, seen = session.get("since"), session.get("seen")
    if not (isinstance(token_id, str) and isinstance(name, str)):
        raise SignInRequired(expired=False)
    moment = now()
    if (
        not isinstance(since, int)
        or not isinstance(seen, int)
        or moment - seen > idle_seconds(request)
        or moment - since > MAX_SESSION.total_seconds()
    ):
        session.clear()
        raise SignInRequired(expired=True)
    database: Database = request.app.state.database
    async with database.read() as conn:
        record = await ApiTokens(conn).get(token_id)
    if record is None or record.revoked or record.role not in _READERS:
        session.clear()
        raise SignInRequired(expired=True)
    if touch:
        session["seen"] = int(moment)
    return Clinician(token_id, name)


def remaining_seconds(request: Request) -> float:
    """How long the session lasts without further activity (call after current_clinician)."""
    seen = request.session.get("seen")
    since = request.session.get("since")
    if not isinstance(seen, int) or not isinstance(since, int):
        return 0.0
    moment = now()
    return max(
        0.0,
        min(seen + idle_seconds(request), since + MAX_SESSION.total_seconds()) - moment,
    )


async def signed_in(request: Request) -> Clinician:
    """Dependency of pages and actions: the clinician, whose activity this request is."""
    return await current_clinician(request, touch=True)


async def signed_in_quietly(request: Request) -> Clinician:
    """Dependency of live updates: the clinician, without prolonging the session."""
    return await current_clinician(request, touch=False)
