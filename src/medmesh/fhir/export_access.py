"""Which patients a caller may take out in bulk ($everything, $export), decided by the access
policy and audited as exports.

An export carries whole records, so it needs access to the whole record: a grant that a
consent limits to some data categories does not extend to exports (such a grantee searches
the categories it may see instead). Every requested resource type must be in the token's scopes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from fastapi import Request

from medmesh.access.http import audit_results, authorize, authorized_patients
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Forbidden


def _check_scopes(principal: Principal, types: Collection[str]) -> None:
    refused = sorted(t for t in types if not principal.scopes.allows(t, Interaction.SEARCH))
    if refused:
        raise Forbidden(f"the token's scopes do not allow export of {', '.join(refused)}")


async def exportable_patients(
    request: Request,
    principal: Principal,
    requested: Sequence[str] | None,
    types: Collection[str],
) -> list[str]:
    """The ids among `requested` (None: every patient the caller may see) the caller may
    export, sorted; each is audited as an export."""
    _check_scopes(principal, types)
    decisions = await authorized_patients(
        request, principal, resource_type="Patient", interaction=Interaction.SEARCH
    )
    whole = {p for p, d in decisions.items() if d.categories is None}
    chosen = sorted(whole if requested is None else whole.intersection(requested))
    await audit_results(
        request, principal, decisions, chosen, resource_type="Patient", subtype="export"
    )
    return chosen


async def may_export_record(
    request: Request, principal: Principal, patient_id: str, types: Collection[str]
) -> None:
    """Refuse ($everything of one patient) unless the whole record may be taken; audited."""
    _check_scopes(principal, types)
    decision = await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type="Patient",
        interaction=Interaction.READ,
        subtype="export",
        resource_id=patient_id,
        hide=True,
    )
    if decision.categories is not None:
        raise Forbidden(
            "your access to this record is limited to some categories; search them instead"
        )


async def visible_members(
    request: Request, principal: Principal, members: Sequence[str]
) -> list[str]:
    """The members of a group the caller may know of (a Group read lists only those)."""
    decisions = await authorized_patients(
        request, principal, resource_type="Patient", interaction=Interaction.SEARCH
    )
    return sorted(p for p in members if p in decisions)
