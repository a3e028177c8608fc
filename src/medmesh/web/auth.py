"""Signing in and out: username and password, then the TOTP code (or, for staff without one,
setting up TOTP), each step a form with the session's CSRF token; and the activity ping that
keeps a session alive while the person is using a page that does not otherwise talk to the
server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.identity.accounts import (
    Account,
    AccountLocked,
    AddressThrottled,
    NextStep,
    SignIn,
    SignInRefused,
)
from medmesh.access.identity.totp import Enrolment
from medmesh.http.deps import provided
from medmesh.web import session
from medmesh.web.responses import WebRoute
from medmesh.web.session import SignInRequired
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_FIELD = 1024  # longer than any username, password or code


# The app's sign-in service (one per process: its throttle counts per process).
sign_in_service = provided(SignIn)


def moment(request: Request) -> datetime:
    return datetime.fromtimestamp(session.now(request), UTC)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _field(request: Request, name: str) -> str:
    value = (await request.form()).get(name)
    # Too long for any account: treated as a wrong answer, never cut short (NIST: no
    # truncation).
    return value if isinstance(value, str) and len(value) <= MAX_FIELD else ""


def _status(refusal: SignInRefused) -> int:
    return 429 if isinstance(refusal, AccountLocked | AddressThrottled) else 401


def login_page(
    request: Request, *, error: str | None = None, status: int = 200, **extra: Any
) -> Response:
    context = {"expired": False, "error": error, "username": "", **extra}
    return page(request, "login.html", context, status_code=status)


def _signed_in(request: Request, account: Account) -> Response:
    session.sign_in(request, account)
    target = session.take_return(request) or session.home_for(account.role)
    return RedirectResponse(target, status_code=303)


@router.get("/login")
async def login_form(request: Request, expired: bool = False) -> Response:
    if expired:  # the page's idle timer sent the browser here: end the session for good
        session.forget(request)
    else:
        try:
            user = await session.current_user(request, touch=False)
        except SignInRequired:
            pass
        else:
            return RedirectResponse(user.home, status_code=303)
    return login_page(request, expired=expired)


@router.post("/login")
async def login(request: Request) -> Response:
    await session.check_csrf(request)
    session.drop_pending(request)  # a new attempt: an earlier accepted password no longer counts
    username = await _field(request, "username")
    try:
        accepted = await sign_in_service(request).password(
            username,
            await _field(request, "password"),
            address=client_address(request),
            now=moment(request),
        )
    except SignInRefused as refusal:
        return login_page(request, error=str(refusal), status=_status(refusal), username=username)
    if accepted.next is NextStep.DONE:
        return _signed_in(request, accepted.account)
    session.begin_second_step(request, accepted.account)
    target = "/login/code" if accepted.next is NextStep.CODE else "/login/enrol"
    return RedirectResponse(target, status_code=303)


def restart(request: Request, error: str, status: int) -> Response:
    """Back to the first step (the pending sign-in is over)."""
    session.forget(request)
    return login_page(request, error=error, status=status)


PENDING_OVER = "The sign-in took too long. Enter your username and password again."


@router.get("/login/code")
async def code_form(request: Request) -> Response:
    if session.pending_user(request) is None:
        return RedirectResponse("/login", status_code=303)
    return page(request, "login_code.html", {"error": None})


@router.post("/login/code")
async def code(request: Request) -> Response:
    await session.check_csrf(request)
    user_id = session.pending_user(request)
    if user_id is None:
        return restart(request, PENDING_OVER, 401)
    try:
        account = await sign_in_service(request).code(
            user_id,
            await _field(request, "code"),
            address=client_address(request),
            now=moment(request),
        )
    except (AccountLocked, AddressThrottled) as refusal:
        return restart(request, str(refusal), 429)
    except SignInRefused as refusal:
        return page(request, "login_code.html", {"error": str(refusal)}, status_code=401)
    return _signed_in(request, account)


def enrol_context(enrolment: Enrolment, error: str | None, action: str) -> dict[str, Any]:
    secret = enrolment.secret
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return {"secret": grouped, "uri": enrolment.uri, "error": error, "action": action}


@router.get("/login/enrol")
async def enrol_form(request: Request) -> Response:
    user_id = session.pending_user(request)
    if user_id is None:
        return RedirectResponse("/login", status_code=303)
    try:
        enrolment = await sign_in_service(request).enrolment(user_id, now=moment(request))
    except SignInRefused as refusal:
        return restart(request, str(refusal), _status(refusal))
    return page(request, "login_enrol.html", enrol_context(enrolment, None, "/login/enrol"))


@router.post("/login/enrol")
async def enrol(request: Request) -> Response:
    await session.check_csrf(request)
    user_id = session.pending_user(request)
    if user_id is None:
        return restart(request, PENDING_OVER, 401)
    service = sign_in_service(request)
    try:
        account = await service.confirm_enrolment(
            user_id,
            await _field(request, "code"),
            address=client_address(request),
            now=moment(request),
        )
    except (AccountLocked, AddressThrottled) as refusal:
        return restart(request, str(refusal), 429)
    except SignInRefused as refusal:
        try:
            enrolment = await service.enrolment(user_id, now=moment(request))
        except SignInRefused as ended:  # disabled or locked meanwhile
            return restart(request, str(ended), _status(ended))
        context = enrol_context(enrolment, str(refusal), "/login/enrol")
        return page(request, "login_enrol.html", context, status_code=401)
    return _signed_in(request, account)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await session.check_csrf(request)
    await session.sign_out(request)
    return RedirectResponse("/login", status_code=303)


@router.post("/session/activity", status_code=204)
async def activity(request: Request) -> Response:
    """The person is at the keyboard (the page reports it at most once a minute)."""
    await session.check_csrf(request)
    await session.current_user(request, touch=True)
    return Response(status_code=204)
