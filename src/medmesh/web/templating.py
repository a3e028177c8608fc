"""The Jinja2 environment of the dashboard: templates, filters and the page response."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from medmesh.web import session

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def _clock(moment: datetime | None) -> str:
    """Fallback text of a <time> element (the browser shows it in local time)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%d %b %H:%M UTC")


templates = Jinja2Templates(directory=_HERE / "templates")
templates.env.filters["iso"] = _iso
templates.env.filters["clock"] = _clock
templates.env.globals["csrf_field"] = session.CSRF_FIELD
templates.env.globals["csrf_header"] = session.CSRF_HEADER


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A rendered template with the session's CSRF token. Its Content-Security-Policy and the
    other security headers come from http/headers.py, like every response's."""
    full = {
        "csrf_token": session.csrf_token(request),
        "idle_seconds": int(session.idle_seconds(request)),
        **context,
    }
    return templates.TemplateResponse(request, name, full, status_code=status_code)
