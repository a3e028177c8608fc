"""searchset Bundles with self/next/previous links built from the request."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from medmesh.fhir.search import Paging, ignored_params


def base_url(request: Request) -> str:
    """The FHIR base URL as the client reached it (…/fhir)."""
    return str(request.url_for("fhir_metadata")).removesuffix("/metadata")


def page_url(
    request: Request, paging: Sequence[tuple[str, str]], drop: Collection[str] = ()
) -> str:
    """The request's own URL with its paging parameters replaced by `paging` (and `drop`
    left out)."""
    replaced = {name for name, _ in paging} | set(drop) | ignored_params(request)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in replaced]
    return f"{request.url.replace(query='')}?{urlencode([*params, *paging])}"


def _offset_url(request: Request, offset: int, count: int) -> str:
    return page_url(request, [("_count", str(count)), ("_offset", str(offset))])


CURSOR = "_cursor"


def keyset_links(
    request: Request, count: int, cursor: str | None, following: str | None
) -> list[dict[str, str]]:
    """self and next links of a keyset-paged search: `next` carries the position after the
    page's last entry, so each page is an index range however deep it is (no `previous`)."""
    here = [("_count", str(count))] + ([(CURSOR, cursor)] if cursor else [])
    links = [{"relation": "self", "url": page_url(request, here, drop=("_offset",))}]
    if following is not None and count > 0:
        there = [("_count", str(count)), (CURSOR, following)]
        links.append({"relation": "next", "url": page_url(request, there, drop=("_offset",))})
    return links


def searchset(
    request: Request,
    resources: Sequence[dict[str, Any]],
    paging: Paging,
    has_more: bool,
    *,
    total: int | None = None,
    included: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A page of an offset-paged search, with self, next and previous links; `total`: the
    number of matches (Bundle.total), `included`: resources `_include`/`_revinclude` added."""
    links = [{"relation": "self", "url": _offset_url(request, paging.offset, paging.count)}]
    if has_more and paging.count > 0:
        following = _offset_url(request, paging.offset + paging.count, paging.count)
        links.append({"relation": "next", "url": following})
    if paging.offset > 0:
        previous = max(0, paging.offset - paging.count)
        links.append({"relation": "previous", "url": _offset_url(request, previous, paging.count)})
    return searchset_bundle(request, resources, links, total=total, included=included)


# Every entry's Bundle.entry.search, shared (read-only) rather than built for each entry.
_MATCH = {"mode": "match"}
_INCLUDE = {"mode": "include"}


def searchset_bundle(
    request: Request,
    resources: Sequence[dict[str, Any]],
    links: list[dict[str, str]],
    *,
    total: int | None = None,
    included: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A searchset Bundle of `resources` (each a match) with the given links."""
    base = base_url(request)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = [
        {
            "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": search,
        }
        for rs, search in ((resources, _MATCH), (included, _INCLUDE))
        for r in rs
    ]
    return bundle
