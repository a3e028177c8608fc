"""The access decision of the care routes: the policy's, audited, narrowed to who may act.

Reading a patient's care data needs the whole record (a consent limited to some data
categories does not cover it). Acting (writing, deciding) needs a closer tie, which each route
names: the patient themself (`self`) and/or their care team (`care-team`); a clinician who
opened the record by consent or break-glass reads but does not act, and a backend service
reads only.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import Request

from medmesh.access.http import authorize, record
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import Decision
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Forbidden, NotFound

SELF = "self"
CARE_TEAM = "care-team"
PATIENT_OR_TEAM = (SELF, CARE_TEAM)

_SUBTYPE = {
    Interaction.CREATE: "create",
    Interaction.READ: "read",
    Interaction.UPDATE: "update",
    Interaction.DELETE: "delete",
    Interaction.SEARCH: "search",
}


async def decide(
    request: Request,
    principal: Principal,
    patient_id: str,
    resource_type: str,
    interaction: Interaction,
    *,
    actors: Collection[str] = PATIENT_OR_TEAM,
    resource_id: str | None = None,
    hide: bool = False,
    refusal: str = "only the patient and their care team may do this",
) -> Decision:
    """Decide and audit; refuse by raising (NotFound when `hide`). `actors`: the bases that
    may write (CREATE, UPDATE, DELETE); reads take any basis that covers the whole record."""
    subtype = _SUBTYPE[interaction]
    decision = await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type=resource_type,
        interaction=interaction,
        subtype=subtype,
        resource_id=resource_id,
        hide=hide,
    )
    writing = interaction in (Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE)
    if decision.categories is None and (not writing or decision.basis in actors):
        return decision
    await record(
        request,
        principal,
        interaction=interaction,
        permitted=False,
        patient_id=patient_id,
        resource_type=resource_type,
        subtype=subtype,
        basis="not-an-actor" if writing else "consent-excludes-care-data",
        resource_id=resource_id,
    )
    if hide:
        raise NotFound(f"this {resource_type} is not known")
    raise Forbidden(refusal)
