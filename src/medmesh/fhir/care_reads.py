"""Reading one care resource by id (Communication, MedicationRequest, Appointment): load it,
ask the policy, and answer 404 alike for an unknown id, a refusal and a consent limited to
some data categories (which covers no care data), so a caller learns nothing of records
they may not see."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import authorize
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import NotFound
from medmesh.http.deps import database_of

# What a loader returns: the patient the resource belongs to and the FHIR resource, or None.
Loaded = tuple[str, dict[str, Any]] | None


async def read_care_resource(
    request: Request,
    principal: Principal,
    kind: str,
    resource_id: str,
    loader: Callable[[AsyncConnection, str], Awaitable[Loaded]],
) -> dict[str, Any]:
    """The resource `loader` finds for `resource_id`, if the policy lets `principal` read the
    patient's whole record; NotFound otherwise. The read is audited either way."""
    async with database_of(request).read() as conn:
        found = await loader(conn, resource_id)
    if found is None:
        raise NotFound(f"{kind}/{resource_id} is not known")
    patient_id, resource = found
    decision = await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type=kind,
        interaction=Interaction.READ,
        subtype="read",
        resource_id=resource_id,
        hide=True,
    )
    if decision.categories is not None:
        raise NotFound(f"{kind}/{resource_id} is not known")
    return resource
