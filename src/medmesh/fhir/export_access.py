"""Which patients a caller may export: one function, for the lead to replace.

TODO(lead): replace the body with `medmesh.access.http.authorized_patients(request,
principal, resource_type=..., interaction="export")` (and "read" for $everything) once the
policy lands. Every export route asks here, and a job's patient list is fixed at kick-off.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request
from sqlalchemy import select

from medmesh.access.principals import ApiPrincipal
from medmesh.store.database import Database
from medmesh.store.schema import patients


async def exportable_patients(
    request: Request, principal: ApiPrincipal, requested: Sequence[str] | None
) -> list[str]:
    """The ids among `requested` (None: all patients) the caller may export, sorted.

    For now every `require_reader` caller may export every patient (what they may already
    read one by one through the FHIR API).
    """
    del principal  # the policy decision will use it
    database: Database = request.app.state.database
    query = select(patients.c.id).order_by(patients.c.id)
    if requested is not None:
        if not requested:
            return []
        query = query.where(patients.c.id.in_(list(dict.fromkeys(requested))))
    async with database.read() as conn:
        return list((await conn.execute(query)).scalars())
