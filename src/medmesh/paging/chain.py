"""Who a page goes to at each step of a patient's escalation chain, and how long each step
waits. Without a chain in the care plan: the primary clinician (else the care team), then
whoever is on call in the first team of their organisation, then that team's lead."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Severity
from medmesh.domain.care_plans import CarePlan, EscalationStep
from medmesh.paging.repository import Rosters
from medmesh.rules.defaults import thresholds_for
from medmesh.store.consents import CareTeams
from medmesh.store.users import Users

_WARNING_MINUTES = 60.0  # a warning waits an hour at each step unless the chain says otherwise


async def chain_of(conn: AsyncConnection, plan: CarePlan) -> tuple[EscalationStep, ...]:
    if plan.escalation_chain:
        return plan.escalation_chain
    primary = await _primary(conn, plan)
    steps = [EscalationStep("primary")]
    if primary:
        user = await Users(conn).get(primary[0])
        teams = await Rosters(conn).teams(user.organization_id) if user else []
        if teams:
            steps += [EscalationStep("team", teams[0].id), EscalationStep("lead", teams[0].id)]
    return tuple(steps)


async def _primary(conn: AsyncConnection, plan: CarePlan) -> list[str]:
    """The plan's primary clinician (a user id or username), else the care team's members
    named primary, else the whole care team."""
    users = Users(conn)
    if plan.primary_clinician:
        found = await users.get(plan.primary_clinician) or await users.find_by_username(
            plan.primary_clinician
        )
        if found is not None and not found.disabled:
            return [found.id]
    members = await CareTeams(conn).members(plan.patient_id)
    primary = [u for u, role in members if role == "primary"]
    return primary or [u for u, _ in members]


async def recipients(
    conn: AsyncConnection, plan: CarePlan, step: EscalationStep, at: datetime
) -> list[str]:
    """The user ids a step pages at `at` (empty: the step reaches nobody, go on)."""
    if step.to == "primary":
        return await _primary(conn, plan)
    if step.to == "user":
        found = await Users(conn).get(step.ref or "")
        return [] if found is None or found.disabled else [found.id]
    team = await Rosters(conn).team_by_id(step.ref or "")
    if team is None:
        return []
    if step.to == "lead":
        return [team.lead_id] if team.lead_id else []
    covering = team.on_call(at)
    if covering:
        return covering
    # A gap in the roster: the team's fallback, else its lead.
    return [u for u in (team.fallback_id or team.lead_id,) if u]


def wait(plan: CarePlan, step: EscalationStep, severity: Severity) -> timedelta:
    """How long a page at this step waits for an acknowledgement."""
    if severity.value in step.after:
        return timedelta(minutes=float(step.after[severity.value]))
    thresholds = thresholds_for(plan)
    if severity is Severity.CRITICAL:
        return thresholds.minutes("escalate_critical_minutes")
    if severity is Severity.URGENT:
        return thresholds.minutes("escalate_urgent_minutes")
    return timedelta(minutes=_WARNING_MINUTES)
