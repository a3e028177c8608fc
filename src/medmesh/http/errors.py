"""Every error answer of the HTTP API is a FHIR OperationOutcome, mapped here once.

Diagnostics name what was wrong, never the submitted values (which may be health data).
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medmesh.domain.errors import (
    Conflict,
    Forbidden,
    InvalidReading,
    InvalidRequest,
    InvalidSearch,
    MedmeshError,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedContent,
    UnsupportedMediaType,
)
from medmesh.http.responses import FhirResponse, operation_outcome

log = logging.getLogger(__name__)

# error type → (HTTP status, FHIR issue-type code)
_STATUS: list[tuple[type[MedmeshError], int, str]] = [
    (Unauthenticated, 401, "login"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not-found"),
    (Conflict, 409, "conflict"),
    (PayloadTooLarge, 413, "too-costly"),
    (UnsupportedMediaType, 415, "not-supported"),
    (InvalidSearch, 400, "invalid"),
    (InvalidReading, 400, "invalid"),
    (InvalidRequest, 400, "invalid"),
    (UnsupportedContent, 415, "not-supported"),
]
_HTTP_CODES = {
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
}


def _medmesh_error(_: Request, exc: Exception) -> FhirResponse:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return FhirResponse(
                operation_outcome(code, str(exc)), status_code=status, headers=headers
            )
    log.error("unmapped error type %s", type(exc).__name__)
    return FhirResponse(operation_outcome("exception", "internal error"), status_code=500)


def _validation_error(_: Request, exc: Exception) -> FhirResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what, never the offending input.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    )
    return FhirResponse(
        operation_outcome("invalid", problems or "invalid request"), status_code=400
    )


def _http_error(_: Request, exc: Exception) -> FhirResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    return FhirResponse(
        operation_outcome(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def _client_disconnect(_: Request, exc: Exception) -> FhirResponse:
    # The client went away before its body was complete (a device losing its link): nothing
    # was read or stored, and there is nobody to answer. The 400 is for the request log only.
    log.info("client disconnected before the request body was complete")
    return FhirResponse(
        operation_outcome("incomplete", "the request body was not complete"), status_code=400
    )


def _log_unexpected(exc: BaseException) -> None:
    # The frames, not the message: a message may quote data that was being processed.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s handling a request\n%s", type(exc).__name__, frames)


class UnexpectedErrors:
    """Answers an unexpected exception with a 500 OperationOutcome and logs it without its
    message. Unlike Starlette's own handler it does not re-raise, so the server does not log
    the message either."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            _log_unexpected(exc)
            if started:
                return  # too late for an answer; the client sees a broken response
            response = FhirResponse(
                operation_outcome("exception", "internal error"), status_code=500
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MedmeshError, _medmesh_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_middleware(UnexpectedErrors)
