"""Web sessions: a signed, HttpOnly, SameSite=Strict cookie (Starlette's SessionMiddleware)
holding who signed in (user id, username, display name, role, organisation, patient id), a
CSRF token, and when the session began and when the person last did something. No health data.

Signing in takes two steps for an account with TOTP (password, then code): between them the
session holds only the pending user id and when the password was accepted. The session ends
after `session_idle_minutes` without user activity, after `MAX_SESSION` in any case, and as
soon as the account is disabled, deleted or changes role or organisation. The cookie also
carries the account's session epoch; signing out, a password reset, disablement and lockout
raise it in the database, which ends every session of the account on every device at once
(a copied cookie included).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request

from medmesh.access.identity.accounts import STAFF, Account, account_of
from medmesh.access.identity.principals import Role
from medmesh.config import Settings
from medmesh.http.deps import database_of, settings_of, wall_clock_of
from medmesh.store.users import Users

SESSION_COOKIE = "medmesh_session"
MAX_SESSION = timedelta(hours=12)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PENDING_FOR = timedelta(minutes=5)  # from the password to the code (or enrolment)


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The person signed in to this session."""

    user_id: str
    username: str
    display_name: str
    role: Role
    organization_id: str
    patient_id: str | None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF

    @property
    def home(self) -> str:
        """Where this person lands after signing in."""
        return home_for(self.role)


def home_for(role: Role) -> str:
    """Where a person of this role lands after signing in."""
    if role is Role.CAREGIVER:
        return "/caregiving"
    return "/" if role in STAFF else "/me"


class SignInRequired(Exception):
    """No session, or one that has ended. Not a MedmeshError: the web routes answer it with
    the sign-in page, not the API's OperationOutcome."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("sign-in required")
        self.expired = expired


class CsrfRejected(Exception):
    """A state-changing request without this session's CSRF token."""


class ElsewhereHome(Exception):
    """A signed-in person on a page that is not for their role: sent to their own home page
    (patients to /me, staff to the panel). Routing, not authorization: access/policy/decision.py
    decides what each may see."""

    def __init__(self, home: str) -> None:
        super().__init__("another home page")
        self.home = home


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
        "https_only": bool(settings.session_https_only),
    }


def signed_in_identity(session: Mapping[str, Any]) -> str | None:
    """Who a session belongs to, for rate limiting (None before sign-in); not a check that
    the session is still valid."""
    user_id = session.get("uid")
    return user_id if isinstance(user_id, str) else None


def now(request: Request) -> float:
    """The clock sessions are measured by (the app's `WallClock`; tests provide their own)."""
    return wall_clock_of(request)()


def idle_seconds(request: Request) -> float:
    return settings_of(request).session_idle_minutes * 60.0


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


RETURN_KEY = "return_to"
# Only these pages are returned to after sign-in: an app's authorization waiting for the
# person, and a page's acknowledgement link (never an arbitrary URL: no open redirect).
RETURN_PREFIXES = ("/oauth/authorize/", "/page/")


def _returnable(value: object) -> bool:
    return isinstance(value, str) and value.startswith(RETURN_PREFIXES)


def remember_return(request: Request, path: str) -> None:
    """After sign-in, go back to `path` (an app's authorization, a page's link)."""
    if _returnable(path):
        request.session[RETURN_KEY] = path


def _kept_return(request: Request) -> dict[str, str]:
    value = request.session.get(RETURN_KEY)
    return {RETURN_KEY: value} if isinstance(value, str) and _returnable(value) else {}


def take_return(request: Request) -> str | None:
    """Where sign-in was asked from (once), if it is a page to return to."""
    value = request.session.pop(RETURN_KEY, None)
    return value if isinstance(value, str) and _returnable(value) else None


def sign_in(request: Request, account: Account) -> None:
    """A new session (new CSRF token too, so nothing from before sign-in carries over: the
    cookie is the whole session, so this is what a new session id is elsewhere). Only the
    page to return to (an app's pending authorization) is kept."""
    kept = _kept_return(request)
    request.session.clear()
    moment = int(now(request))
    request.session.update(
        uid=account.user_id,
        user=account.username,
        name=account.display_name,
        role=account.role.value,
        org=account.organization_id,
        pid=account.patient_id,
        csrf=secrets.token_urlsafe(32),
        since=moment,
        seen=moment,
        epoch=account.session_epoch,
        **kept,
    )


def begin_second_step(request: Request, account: Account) -> None:
    """The password was right; the code (or enrolment) is still to come. A fresh session
    that names the pending account and nothing else (and the page to return to)."""
    kept = _kept_return(request)
    request.session.clear()
    request.session.update(
        pending=account.user_id,
        pending_since=int(now(request)),
        csrf=secrets.token_urlsafe(32),
        **kept,
    )


def pending_user(request: Request) -> str | None:
    """The account whose password was accepted within PENDING_FOR, if any."""
    user_id, since = request.session.get("pending"), request.session.get("pending_since")
    if not isinstance(user_id, str) or not isinstance(since, int):
        return None
    if now(request) - since > PENDING_FOR.total_seconds():
        return None
    return user_id


def drop_pending(request: Request) -> None:
    request.session.pop("pending", None)
    request.session.pop("pending_since", None)


def forget(request: Request) -> None:
    """Clear this cookie only (a sign-in restarted, a session already over)."""
    request.session.clear()


async def sign_out(request: Request) -> None:
    """End every session of the signed-in account, this one and any copy or other device."""
    user_id = signed_in_identity(request.session)
    request.session.clear()
    if user_id is not None:
        async with database_of(request).write() as conn:
            await Users(conn).end_sessions(user_id)


def _end(request: Request) -> SignInRequired:
    request.session.clear()
    return SignInRequired(expired=True)


async def current_user(request: Request, *, touch: bool) -> SessionUser:
    """The signed-in person, or SignInRequired. `touch` marks the request as the person's own
    doing, which keeps the session alive; background refreshes (live updates) do not. Each
    call checks the account: disabled, deleted or changed, the session ends."""
    session = request.session
    user_id, since, seen = session.get("uid"), session.get("since"), session.get("seen")
    if not isinstance(user_id, str):
        raise SignInRequired(expired=False)
    moment = now(request)
    if (
        not isinstance(since, int)
        or not isinstance(seen, int)
        or moment - seen > idle_seconds(request)
        or moment - since > MAX_SESSION.total_seconds()
    ):
        raise _end(request)
    async with database_of(request).read() as conn:
        record = await Users(conn).get(user_id)
    if record is None or record.disabled or session.get("epoch") != record.session_epoch:
        raise _end(request)
    account = account_of(record)
    if (account.role.value, account.organization_id, account.patient_id) != (
        session.get("role"),
        session.get("org"),
        session.get("pid"),
    ):
        raise _end(request)
    if touch:
        session["seen"] = int(moment)
    return SessionUser(
        user_id=account.user_id,
        username=account.username,
        display_name=account.display_name,
        role=account.role,
        organization_id=account.organization_id,
        patient_id=account.patient_id,
    )


def remaining_seconds(request: Request) -> float:
    """How long the session lasts without further activity (call after current_user)."""
    seen = request.session.get("seen")
    since = request.session.get("since")
    if not isinstance(seen, int) or not isinstance(since, int):
        return 0.0
    moment = now(request)
    return max(
        0.0,
        min(seen + idle_seconds(request), since + MAX_SESSION.total_seconds()) - moment,
    )


async def _staff(request: Request, *, touch: bool) -> SessionUser:
    user = await current_user(request, touch=touch)
    if not user.is_staff:
        raise ElsewhereHome(user.home)
    return user


async def signed_in(request: Request) -> SessionUser:
    """Dependency of the staff pages and actions: the clinician or organisation admin, whose
    activity this request is."""
    return await _staff(request, touch=True)


async def signed_in_as(request: Request, *roles: Role) -> SessionUser:
    """The signed-in person if they have one of these roles; anyone else goes home."""
    user = await current_user(request, touch=True)
    if user.role not in roles:
        raise ElsewhereHome(user.home)
    return user


async def signed_in_quietly(request: Request) -> SessionUser:
    """Dependency of the staff pages' live updates: without prolonging the session."""
    return await _staff(request, touch=False)
