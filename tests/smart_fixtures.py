"""A SMART app's side of App Launch, as a browser app does it, for the tests: PKCE (S256), the
authorization URL, following medmesh's hand-over pages (meta refresh) and the consent form,
and the code exchange. The person's side (sign-in, consent) is driven through the same
httpx client, which keeps the session cookie as a browser would."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.accounts_fixtures import csrf_of

FHIR_BASE = "http://127.0.0.1:8000/fhir"  # Settings().public_base_url's FHIR base
REDIRECT_URI = "http://127.0.0.1:9100/callback"
APP_ORIGIN = "http://127.0.0.1:9100"
_REFRESH = re.compile(r'http-equiv="refresh" content="0;url=([^"]+)"')


def handover_target(page: httpx.Response) -> str:
    """Where a hand-over page (meta refresh) sends the browser."""
    found = _REFRESH.search(page.text)
    assert found, f"no hand-over on the page: {page.status_code} {page.text[:300]}"
    return html.unescape(found.group(1))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class SmartApp:
    client_id: str
    redirect_uri: str = REDIRECT_URI
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def authorize_params(self, scope: str, /, **changes: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": self.state,
            "aud": FHIR_BASE,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(changes)
        return {k: v for k, v in params.items() if v is not None}

    def authorize_url(self, scope: str, /, **changes: str | None) -> str:
        return "/oauth/authorize?" + urlencode(self.authorize_params(scope, **changes))

    def token_form(self, code: str, **changes: str | None) -> dict[str, str]:
        form: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": self.verifier,
        }
        form.update(changes)
        return {k: v for k, v in form.items() if v is not None}


async def open_consent(http: httpx.AsyncClient, app: SmartApp, scope: str) -> httpx.Response:
    """Follow the app's authorization request to the consent page (signed in already)."""
    first = await http.get(app.authorize_url(scope))
    assert first.status_code == 200, first.text
    consent = await http.get(handover_target(first))
    assert consent.status_code == 200, consent.text
    return consent


async def answer_consent(
    http: httpx.AsyncClient, consent: httpx.Response, decision: str, **fields: str
) -> httpx.Response:
    request_id = re.search(r'name="request" value="([^"]+)"', consent.text)
    assert request_id, consent.text
    return await http.post(
        "/oauth/authorize/consent",
        data={
            "csrf_token": csrf_of(consent.text),
            "request": request_id.group(1),
            "decision": decision,
            **fields,
        },
    )


async def approve(
    http: httpx.AsyncClient, app: SmartApp, scope: str, **fields: str
) -> dict[str, str]:
    """Run the authorization request to its approval; the query the app's redirect URI got."""
    consent = await open_consent(http, app, scope)
    answered = await answer_consent(http, consent, "approve", **fields)
    assert answered.status_code == 200, answered.text
    target = handover_target(answered)
    assert target.startswith(app.redirect_uri + "?"), target
    return query_of(target)
