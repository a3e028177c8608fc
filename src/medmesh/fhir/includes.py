"""`_include` and `_revinclude`: the resources a search page references, or that reference it,
added to the Bundle only as far as the access policy lets the caller see them.

Each included type is decided on its own (the token's scopes for that type, then the patients
the caller may see for it), exactly as a search of that type would be, and audited as one.
An included resource the caller may not see is left out, silently, as a search leaves it out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import audit_results, authorized_patients
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import ALERTS_CATEGORY, Decision, observation_access
from medmesh.access.policy.scopes import Interaction

# flags.py imports this module for Flag:patient, so it is read as a module at call time.
from medmesh.fhir import flags, resources
from medmesh.fhir.search import MAX_COUNT
from medmesh.fhir.search_results import ResultControls, shaped
from medmesh.http.deps import database_of
from medmesh.store.alerts import Alerts
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observation_search import ObservationFilter, search_observations
from medmesh.store.registry import Assignments, Devices, Patients

# A _revinclude adds at most this many resources of each kind to a page (newest first).
MAX_REVINCLUDED = MAX_COUNT


async def device_resource(conn: AsyncConnection, device_id: str) -> dict[str, Any]:
    """A Device as FHIR, with its current holder (if any) and last status."""
    record = await Devices(conn).get(device_id)
    history = await Assignments(conn).for_device(device_id)
    status = await DeviceStatuses(conn).get(device_id)
    now = datetime.now(UTC)
    current = next((a.patient_id for a in history if a.covers(now)), None)
    return resources.device(record, current, status)


def _reference_id(resource: dict[str, Any], element: str) -> str | None:
    reference = resource.get(element, {}).get("reference", "")
    kind, _, ident = reference.partition("/")
    return ident or None if kind else None


async def _visible(
    request: Request, principal: Principal, resource_type: str
) -> dict[str, Decision]:
    """Who the caller may see `resource_type` of; nobody when the token's scopes do not
    allow that type (an include is not refused for it, only left out)."""
    if not principal.scopes.allows(resource_type, Interaction.SEARCH):
        return {}
    return await authorized_patients(
        request, principal, resource_type=resource_type, interaction=Interaction.SEARCH
    )


async def _patients(
    request: Request, principal: Principal, patient_ids: Iterable[str]
) -> list[dict[str, Any]]:
    decisions = await _visible(request, principal, "Patient")
    wanted = sorted({p for p in patient_ids if p in decisions})
    async with database_of(request).read() as conn:
        found = await Patients(conn).get_many(wanted)
    await audit_results(
        request, principal, decisions, [p.id for p in found], resource_type="Patient"
    )
    return [resources.patient(p) for p in sorted(found, key=lambda p: p.id)]


async def _devices(
    request: Request, principal: Principal, holders: dict[str, set[str]]
) -> list[dict[str, Any]]:
    """Devices by id, each seen through a patient it measured or was assigned to (`holders`)."""
    decisions = await _visible(request, principal, "Device")
    seen = {d: sorted(ps & decisions.keys()) for d, ps in holders.items()}
    seen = {d: ps for d, ps in seen.items() if ps}
    async with database_of(request).read() as conn:
        found = [await device_resource(conn, d) for d in sorted(seen)]
    await audit_results(
        request, principal, decisions, [ps[0] for ps in seen.values()], resource_type="Device"
    )
    return found


async def _observations(
    request: Request,
    principal: Principal,
    wanted: ObservationFilter,
    patient_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Observations matching `wanted` (of `patient_ids` only, when given), newest first."""
    decisions = await _visible(request, principal, "Observation")
    if patient_ids is not None:
        decisions = {p: d for p, d in decisions.items() if p in set(patient_ids)}
    if not decisions:
        return []
    wanted = dataclasses.replace(wanted, access=observation_access(decisions))
    async with database_of(request).read() as conn:
        found = await search_observations(
            conn, wanted, sort=[("effective", True)], limit=MAX_REVINCLUDED
        )
    await audit_results(
        request, principal, decisions, [o.patient_id for o in found], resource_type="Observation"
    )
    return [resources.observation(o) for o in found]


async def _flags(
    request: Request, principal: Principal, patient_ids: Sequence[str]
) -> list[dict[str, Any]]:
    decisions = await _visible(request, principal, "Flag")
    within = [
        p for p in patient_ids if p in decisions and decisions[p].allows_category(ALERTS_CATEGORY)
    ]
    if not within:
        return []
    async with database_of(request).read() as conn:
        found = await Alerts(conn).search(within=within, limit=MAX_REVINCLUDED)
    await audit_results(
        request, principal, decisions, [a.patient_id for a in found], resource_type="Flag"
    )
    return [flags.flag(a) for a in found]


async def _assigned_devices(request: Request, patient_ids: Sequence[str]) -> dict[str, set[str]]:
    holders: dict[str, set[str]] = {}
    async with database_of(request).read() as conn:
        for patient_id in patient_ids:
            for device in await Devices(conn).search(patient_id=patient_id, limit=MAX_REVINCLUDED):
                holders.setdefault(device.id, set()).add(patient_id)
    return holders


async def included_resources(
    request: Request,
    principal: Principal,
    matches: Sequence[dict[str, Any]],
    controls: ResultControls,
) -> list[dict[str, Any]]:
    """What `_include`/`_revinclude` add to a page of `matches` (all of one type), without
    duplicates and without the matches themselves."""
    added: list[dict[str, Any]] = []
    for key in controls.includes:
        source, _, param = key.partition(":")
        if param in ("patient", "subject"):
            element = "subject" if source in ("Observation", "Flag") else "patient"
            ids = [i for m in matches if (i := _reference_id(m, element)) is not None]
            added += await _patients(request, principal, ids)
        elif param == "device":
            holders: dict[str, set[str]] = {}
            for m in matches:
                device_id, patient_id = _reference_id(m, "device"), _reference_id(m, "subject")
                if device_id is not None and patient_id is not None:
                    holders.setdefault(device_id, set()).add(patient_id)
            added += await _devices(request, principal, holders)
    ids = [m["id"] for m in matches]
    for key in controls.revincludes:
        source, _, param = key.partition(":")
        if not ids:
            break
        if source == "Observation" and param == "device":
            added += await _observations(
                request, principal, ObservationFilter(device_ids=tuple(ids))
            )
        elif source == "Observation":
            added += await _observations(request, principal, ObservationFilter(), ids)
        elif source == "Device":
            added += await _devices(request, principal, await _assigned_devices(request, ids))
        elif source == "Flag":
            added += await _flags(request, principal, ids)
    matched = {(m["resourceType"], m["id"]) for m in matches}
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in added:
        key2 = (resource["resourceType"], resource["id"])
        if key2 not in matched:
            unique.setdefault(key2, shaped(resource, _plain(controls)))
    return list(unique.values())


def _plain(controls: ResultControls) -> ResultControls:
    """Included resources are subsetted by `_summary=true` but not by `_elements`, whose
    names are the matches' type's elements."""
    return dataclasses.replace(controls, elements=None)
