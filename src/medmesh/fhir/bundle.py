"""searchset Bundles with self/next/previous links built from the request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from medmesh.fhir.search import Paging


def base_url(request: Request) -> str:
    """The FHIR base URL as the client reached it (…/fhir)."""
    return str(request.url_for("fhir_metadata")).removesuffix("/metadata")


def _page_url(request: Request, offset: int, count: int) -> str:
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_offset", "_count")
    ]
    params += [("_count", str(count)), ("_offset", str(offset))]
    return f"{request.url.replace(query='')}?{urlencode(params)}"


def searchset(
    request: Request, resources: Sequence[dict[str, Any]], paging: Paging, has_more: bool
) -> dict[str, Any]:
    base = base_url(request)
    links = [{"relation": "self", "url": _page_url(request, paging.offset, paging.count)}]
    if has_more and paging.count > 0:
        links.append(
            {
                "relation": "next",
                "url": _page_url(request, paging.offset + paging.count, paging.count),
            }
        )
    if paging.offset > 0:
        previous = max(0, paging.offset - paging.count)
        links.append({"relation": "previous", "url": _page_url(request, previous, paging.count)})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
