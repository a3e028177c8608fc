"""What a FHIR Group is in medmesh: a panel of patients, read-only.

`Group/{organization_id}`: the organisation's patients. `Group/care-team-{user_id}`: the
patients whose care team that clinician is in. Members are listed as the caller may see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import NotFound
from medmesh.store.panels import care_team_panel, organization_panel
from medmesh.store.users import Organizations

CARE_TEAM_PREFIX = "care-team-"


@dataclass(frozen=True, slots=True)
class Panel:
    group_id: str
    name: str
    patient_ids: tuple[str, ...]


async def panel(conn: AsyncConnection, group_id: str) -> Panel:
    """The group's members; NotFound when the id names no organisation or care team."""
    if group_id.startswith(CARE_TEAM_PREFIX):
        user_id = group_id.removeprefix(CARE_TEAM_PREFIX)
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
