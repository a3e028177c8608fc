"""What a FHIR Group is in medmesh: a panel of patients, read-only.

`Group/{organization_id}`: the organisation's patients. `Group/care-team-{user_id}`: the
patients whose care team that clinician is in, for the clinician themself and their
organisation's admins and services (anyone else gets the 404 of an unknown account). Members
are listed as the caller may see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.domain.errors import NotFound
from medmesh.store.panels import care_team_panel, organization_panel
from medmesh.store.users import Organizations, Users

CARE_TEAM_PREFIX = "care-team-"


@dataclass(frozen=True, slots=True)
class Panel:
    group_id: str
    name: str
    patient_ids: tuple[str, ...]


async def _may_see_account(conn: AsyncConnection, viewer: Principal, user_id: str) -> bool:
    """The account itself, or an admin or service of its organisation."""
    if viewer.kind is ActorKind.USER and viewer.id == user_id:
        return True
    if viewer.role not in (Role.ORG_ADMIN, Role.SYSTEM):
        return False
    account = await Users(conn).get(user_id)
    return account is not None and account.organization_id == viewer.organization_id


async def panel(conn: AsyncConnection, group_id: str, viewer: Principal) -> Panel:
    """The group's members; NotFound when the id names no organisation or care team, or a
    care team of an account the viewer may not see (the same answer: that an account exists
    is not told)."""
    if group_id.startswith(CARE_TEAM_PREFIX):
        user_id = group_id.removeprefix(CARE_TEAM_PREFIX)
        if not await _may_see_account(conn, viewer, user_id):
            raise NotFound("Group not found")
        members = await care_team_panel(conn, user_id)
        name = "Care team panel"
    else:
        members = await organization_panel(conn, group_id)
        name = await Organizations(conn).name(group_id) or group_id
    if members is None:
        raise NotFound("Group not found")
    return Panel(group_id, name, tuple(members))


def group_resource(found: Panel, visible: list[str]) -> dict[str, Any]:
    """The panel as a FHIR R4 Group (type person, actual), members limited to `visible`."""
    resource: dict[str, Any] = {
        "resourceType": "Group",
        "id": found.group_id,
        "type": "person",
        "actual": True,
        "name": found.name,
        "quantity": len(visible),
    }
    if visible:
        resource["member"] = [{"entity": {"reference": f"Patient/{p}"}} for p in visible]
    return resource
