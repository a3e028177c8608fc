"""SMART App Launch in the browser: the authorization request an app sends the person to, the
sign-in (the web sign-in, second factor for staff), and the consent screen naming the app and
what it asks for in plain words, with a patient picker for clinicians (docs/oauth.md).

The authorization request arrives from another site, so the SameSite=Strict session cookie is
not sent with it: `GET /oauth/authorize` keeps the checked request and hands over to
`/oauth/authorize/consent` by a same-site navigation (a meta refresh), which carries the
cookie. Leaving for the app is a meta refresh too: the page's `form-action 'self'` would stop
a form's redirect to another origin.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from medmesh.access.http import audit, audit_results
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.oauth.app_launch import (
    Approval,
    AuthorizationParameters,
    Offer,
    UnsafeRedirect,
    accept_request,
    deny,
    fhir_base,
    issue_code,
    offer_for,
    redirect_with,
)
from medmesh.access.oauth.backend_services import OAuthError
from medmesh.access.oauth.launch_audit import app_entry
from medmesh.access.oauth.scope_text import IDENTITY_TEXT, describe
from medmesh.access.oauth.smart_discovery import AUTHORIZE_PATH
from medmesh.access.policy.decision import Decision, visible_patients
from medmesh.access.policy.scopes import Interaction, Scopes
from medmesh.domain.registry import Patient
from medmesh.http.deps import database_of, settings_of
from medmesh.store.oauth_clients import OAuthClientRecord, OAuthClients
from medmesh.store.oauth_grants import AuthorizationRequestRecord, AuthorizationRequests
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.responses import WebRoute, problem
from medmesh.web.session import SessionUser, SignInRequired
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

CONSENT_PATH = AUTHORIZE_PATH + "/consent"
_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "launch",
)
_PICKER_SCOPES = Scopes.parse("user/Patient.rs")


def _handover(url: str, message: str) -> HTMLResponse:
    """A page that moves on to `url` at once (meta refresh), with a link for the person."""
    link = html.escape(url, quote=True)
    text = html.escape(message)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={link}"><title>{text} · medmesh</title>'
        f'</head><body><main><p><a href="{link}">{text}</a></p></main></body></html>'
    )
    return HTMLResponse(body)


def _unusable(message: str) -> HTMLResponse:
    """An authorization request that cannot go back to the app: told to the person only
    (no session is touched, so a cross-site request sets no cookie)."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>App sign-in refused · medmesh</title></head><body><main>"
        "<h1>This app's sign-in request cannot be used</h1>"
        f"<p>{html.escape(message)}. Tell the app's maker; nothing was shared.</p>"
        "</main></body></html>"
    )
    return HTMLResponse(body, status_code=400)


def _now() -> datetime:
    return datetime.now(UTC)


def _principal(user: SessionUser, scopes: Scopes) -> Principal:
    return Principal(
        kind=ActorKind.USER,
        id=user.user_id,
        name=user.display_name,
        role=user.role,
        organization_id=user.organization_id,
        scopes=scopes,
        patient_id=user.patient_id,
    )


def _source(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


async def _audit_answer(
    request: Request,
    user: SessionUser,
    client_id: str,
    *,
    subtype: str,
    permitted: bool,
    patient_id: str | None,
) -> None:
    entry = app_entry(
        subtype=subtype,
        permitted=permitted,
        client_id=client_id,
        actor_kind=ActorKind.USER.value,
        actor_id=user.user_id,
        actor_name=user.display_name,
        organization_id=user.organization_id,
        patient_id=patient_id,
        source=_source(request),
    )
    await audit(request, [entry])


async def _audit_request(request: Request, client_id: str | None, permitted: bool) -> None:
    """The app's authorization request, accepted or refused (the app is the actor: nobody has
    signed in yet)."""
    if not client_id:
        return
    entry = app_entry(
        subtype="smart-request",
        permitted=permitted,
        client_id=client_id,
        actor_kind=ActorKind.CLIENT.value,
        actor_id=client_id,
        actor_name="SMART app",
        organization_id=None,
        patient_id=None,
        source=_source(request),
    )
    await audit(request, [entry])


@router.get(AUTHORIZE_PATH)
async def authorize(request: Request) -> Response:
    """The app's authorization request: checked, kept, and handed to the consent page."""
    query = request.query_params
    repeated = [name for name in _PARAMETERS if len(query.getlist(name)) > 1]
    params = AuthorizationParameters(
        **{name: query.get(name) for name in _PARAMETERS}, repeated=tuple(repeated)
    )
    database = database_of(request)
    base = fhir_base(settings_of(request).public_base_url)
    try:
        client, request_id = await accept_request(database, params, fhir_base_url=base, now=_now())
    except UnsafeRedirect as exc:
        await _audit_request(request, params.client_id, False)
        return _unusable(str(exc))
    except OAuthError as exc:
        await _audit_request(request, params.client_id, False)
        assert params.redirect_uri is not None
        answer = {"error": exc.code.value, "error_description": exc.description}
        if params.state:
            answer["state"] = params.state
        return RedirectResponse(redirect_with(params.redirect_uri, answer), status_code=303)
    await _audit_request(request, client.id, True)
    return _handover(f"{CONSENT_PATH}?request={request_id}", f"Continue to {client.name}")


async def _pending(
    request: Request, request_id: str | None
) -> tuple[AuthorizationRequestRecord, OAuthClientRecord] | None:
    if not request_id or len(request_id) > 64:
        return None
    async with database_of(request).read() as conn:
        pending = await AuthorizationRequests(conn).get(request_id, _now())
        client = None if pending is None else await OAuthClients(conn).get(pending.client_id)
    if pending is None or client is None or client.disabled:
        return None
    return pending, client


def _over(request: Request) -> Response:
    return problem(
        request,
        404,
        "App sign-in over",
        "This app's request has expired or was answered already. Start again from the app.",
    )


async def _patient_choices(
    request: Request, user: SessionUser
) -> tuple[dict[str, Decision], list[Patient]]:
    """The patients a clinician may open in an app: those the policy lets them see on a lasting
    ground (care team, consent); break-glass is for an emergency, not for apps."""
    principal = _principal(user, _PICKER_SCOPES)
    async with database_of(request).read() as conn:
        decisions = await visible_patients(conn, principal, "Patient", Interaction.READ, now=_now())
        lasting = {p: d for p, d in decisions.items() if not d.basis.startswith("break-glass")}
        people = await Patients(conn).get_many(sorted(lasting))
    people.sort(key=lambda p: (p.family.casefold(), p.given.casefold(), p.id))
    await audit_results(
        request, principal, lasting, [p.id for p in people], resource_type="Patient"
    )
    return lasting, people


def _lines(offer: Offer, user: SessionUser) -> list[str]:
    own = user.role is Role.PATIENT
    identity = [
        "Open your own record" if own and s == "launch/patient" else IDENTITY_TEXT[s]
        for s in offer.identity
    ]
    resources = [describe(s, own_record=own) for s in sorted(offer.resources.granted, key=str)]
    return identity + resources


async def _consent_page(
    request: Request,
    user: SessionUser,
    pending: AuthorizationRequestRecord,
    client: OAuthClientRecord,
    offer: Offer,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    people: list[Patient] = []
    if offer.wants_patient and user.role is not Role.PATIENT:
        _, people = await _patient_choices(request, user)
    context: dict[str, Any] = {
        "user": user,
        "app_name": client.name,
        "app_origin": (client.origins or ("",))[0],
        "request_id": pending.id,
        "lines": _lines(offer, user),
        "refused": offer.refused,
        "picker": offer.wants_patient and user.role is not Role.PATIENT,
        "people": people,
        "error": error,
    }
    return page(request, "oauth_consent.html", context, status_code=status)


def _back_to_app(pending: AuthorizationRequestRecord, answer: dict[str, str], app: str) -> Response:
    url = redirect_with(pending.redirect_uri, {**answer, "state": pending.state})
    return _handover(url, f"Back to {app}")


@router.get(CONSENT_PATH)
async def consent_form(request: Request) -> Response:
    found = await _pending(request, request.query_params.get("request"))
    if found is None:
        return _over(request)
    pending, client = found
    try:
        user = await session.current_user(request, touch=True)
    except SignInRequired:
        session.remember_return(request, f"{CONSENT_PATH}?request={pending.id}")
        return RedirectResponse("/login", status_code=303)
    try:
        offer = offer_for(pending.scope, client, user.role)
    except OAuthError as exc:
        if not await deny(database_of(request), pending):
            return _over(request)
        await _audit_answer(
            request, user, client.id, subtype="smart-refused", permitted=False, patient_id=None
        )
        answer = {"error": exc.code.value, "error_description": exc.description}
        return _back_to_app(pending, answer, client.name)
    return await _consent_page(request, user, pending, client, offer)


@router.post(CONSENT_PATH)
async def consent(request: Request) -> Response:
    await session.check_csrf(request)
    user = await session.current_user(request, touch=True)
    form = await request.form()
    request_id, decision, chosen = (form.get(k) for k in ("request", "decision", "patient"))
    found = await _pending(request, request_id if isinstance(request_id, str) else None)
    if found is None:
        return _over(request)
    pending, client = found
    if decision != "approve":
        if not await deny(database_of(request), pending):
            return _over(request)
        await _audit_answer(
            request, user, client.id, subtype="smart-deny", permitted=False, patient_id=None
        )
        answer = {"error": "access_denied", "error_description": "the person said no"}
        return _back_to_app(pending, answer, client.name)
    try:
        offer = offer_for(pending.scope, client, user.role)
    except OAuthError:
        return _over(request)  # the form was not offered for this account
    patient_id: str | None = None
    if offer.wants_patient:
        if user.role is Role.PATIENT:
            patient_id = user.patient_id
        else:
            choices, _ = await _patient_choices(request, user)
            if not isinstance(chosen, str) or chosen not in choices:
                await _audit_answer(
                    request,
                    user,
                    client.id,
                    subtype="smart-authorize",
                    permitted=False,
                    patient_id=chosen if isinstance(chosen, str) and len(chosen) <= 36 else None,
                )
                error = "Choose one of the patients listed: the app opens one record at a time."
                return await _consent_page(
                    request, user, pending, client, offer, error=error, status=400
                )
            patient_id = chosen
    approval = Approval(
        user.user_id, offer.scope_text(with_patient=patient_id is not None), patient_id
    )
    code = await issue_code(database_of(request), pending, approval, _now())
    if code is None:
        return _over(request)
    await _audit_answer(
        request, user, client.id, subtype="smart-authorize", permitted=True, patient_id=patient_id
    )
    return _back_to_app(pending, {"code": code}, client.name)
