"""`Observation/$lastn`: the newest readings of each code, for each patient the search covers
(http://hl7.org/fhir/R4/observation-operation-lastn.html)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, Request

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import observation_access
from medmesh.domain.errors import InvalidSearch
from medmesh.fhir import resources, search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.observation_params import parse_observation_search
from medmesh.fhir.search import Paging, query_params, reject_unknown, single
from medmesh.fhir.search_params import names
from medmesh.fhir.search_results import ResultControls, Summary, shaped
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.observation_search import codes_held, latest_per_code

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)
MAX_PER_CODE = 100
# A $lastn over more patients than this is refused: each patient costs one index probe per code.
MAX_PATIENTS = 1000


def _max(params: dict[str, list[str]]) -> int:
    text = single(params, "max") or "1"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PER_CODE:
        raise InvalidSearch(f"max must be a whole number from 1 to {MAX_PER_CODE}")
    return int(text)


@router.get(
    "/Observation/$lastn",
    summary="The newest Observations of each code, per patient ($lastn)",
    responses=fhir_search("Observation"),
)
async def last_n(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.LASTN))
    per_code = _max(params)
    parsed = parse_observation_search(params)
    summary_text = single(params, "_summary") or "false"
    if summary_text not in ("false", "true", "data"):
        raise InvalidSearch("_summary for $lastn must be true, data or false")
    elements = single(params, "_elements")
    controls = ResultControls(
        paging=Paging(MAX_PATIENTS, 0),
        sort=(),
        summary=Summary(summary_text),
        elements=frozenset(e for e in elements.split(",") if e) if elements else None,
        total=True,
        includes=(),
        revincludes=(),
    )
    decisions = await search_scope(
        request, principal, parsed.patient_id, resource_type="Observation"
    )
    if len(decisions) > MAX_PATIENTS:
        raise InvalidSearch(f"$lastn covers at most {MAX_PATIENTS} patients; name one with patient")
    wanted = dataclasses.replace(parsed.filter, access=observation_access(decisions))
    async with database.read() as conn:
        # Every code the patients hold, laboratory codes outside the vocabulary included; the
        # code and category filters are the search's own, applied to each pair's probe.
        pairs = await codes_held(conn, sorted(decisions))
        found = await latest_per_code(conn, wanted, pairs, per_code)
    if parsed.patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [o.patient_id for o in found],
            resource_type="Observation",
        )
    page = [shaped(resources.observation(o), controls) for o in found]
    return FhirResponse(searchset(request, page, Paging(len(page), 0), False, total=len(page)))
