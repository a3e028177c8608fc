"""How dashboard routes answer what goes wrong: HTML pages and redirects, where the JSON and
FHIR APIs answer with OperationOutcomes (their handlers are app-wide, so the dashboard's
routes catch their own errors first)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from medmesh.domain.errors import Conflict, NotFound
from medmesh.web.session import CsrfRejected, ElsewhereHome, SignInRequired
from medmesh.web.templating import page


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def sign_in_answer(request: Request, *, expired: bool) -> Response:
    """To the sign-in page: a redirect for a page, an HX-Redirect for htmx, a bare 401 for
    scripts and event streams (which cannot follow a redirect usefully)."""
    target = "/login?expired=1" if expired else "/login"
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": target})
    accept = request.headers.get("accept", "")
    if "text/event-stream" in accept or "application/json" in accept:
        return Response(status_code=401)
    return RedirectResponse(target, status_code=303)


def elsewhere_answer(request: Request, home: str) -> Response:
    """To the person's own home page; scripts and streams get a bare 403."""
    if is_htmx(request):
        return Response(status_code=403, headers={"HX-Redirect": home})
    accept = request.headers.get("accept", "")
    if "text/event-stream" in accept or "application/json" in accept:
        return Response(status_code=403)
    return RedirectResponse(home, status_code=303)


def problem(request: Request, status: int, title: str, message: str) -> Response:
    if is_htmx(request):
        # htmx leaves the page as it is on errors; the message goes to the status region.
        return Response(message, status_code=status, media_type="text/plain")
    return page(request, "error.html", {"title": title, "message": message}, status)


class WebRoute(APIRoute):
    """A dashboard route: sign-in, CSRF, missing and conflicting records answered in HTML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                return sign_in_answer(request, expired=exc.expired)
            except ElsewhereHome as exc:
                return elsewhere_answer(request, exc.home)
            except CsrfRejected:
                return problem(
                    request,
                    403,
                    "Form expired",
                    "This form is no longer valid (the page was open too long, or cookies "
                    "are blocked). Reload the page and try again.",
                )
            except NotFound as exc:
                return problem(request, 404, "Not found", str(exc))
            except Conflict as exc:
                return problem(request, 409, "Changed meanwhile", str(exc))

        return guarded


def plain_refusal(refusal: Exception, words: dict[str, str] | None = None) -> str:
    """A rule's refusal as a sentence for a form: the API's field names said as the form's
    labels say them, a capital first and a full stop last."""
    text = str(refusal)
    for name, said in (words or {}).items():
        text = text.replace(name, said)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
