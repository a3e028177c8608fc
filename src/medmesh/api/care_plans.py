"""GET/PUT /api/v1/patients/{id}/care-plan: a patient's alert thresholds, reading schedule and
clinicians. GET shows the thresholds in force (defaults with the plan's overrides); PUT
replaces the plan, and keeps only the thresholds that differ from the defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medmesh.access.http import authorize, require_principal
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.care_plans import STEP_TARGETS, CarePlan, EscalationStep, Schedule, Thresholds
from medmesh.domain.vocabulary import measure_by_key
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.rules.defaults import DEFAULT_THRESHOLDS, thresholds_for
from medmesh.store.care_plans import CarePlans, chain_json
from medmesh.store.registry import Patients

router = APIRouter(prefix="/api/v1", tags=["care plans"], responses=ERROR_RESPONSES)


class ScheduleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_day: dict[str, int] = Field(
        default_factory=dict, description="measure key (e.g. blood-pressure) → readings a day"
    )
    timezone: str = Field("UTC", description="IANA time zone the days are counted in")

    @field_validator("per_day")
    @classmethod
    def _known_measures(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(k for k in value if measure_by_key(k) is None)
        if unknown:
            raise ValueError(f"unknown measure(s): {', '.join(unknown)}")
        if any(not 1 <= count <= 1440 for count in value.values()):
            raise ValueError("readings a day must be 1 to 1440")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone, e.g. Europe/London") from None
        return value


class StepBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="primary, team (on call in team `ref`), lead (of team `ref`), user")
    ref: str | None = Field(None, max_length=100, description="the team's name or a user id")
    after: dict[str, float] = Field(
        default_factory=dict, description="severity → minutes to wait before the next step"
    )

    @model_validator(mode="after")
    def _usable(self) -> StepBody:
        if self.to not in STEP_TARGETS:
            raise ValueError(f"step `to` must be one of {', '.join(STEP_TARGETS)}")
        if self.to != "primary" and not self.ref:
            raise ValueError(f"a `{self.to}` step needs `ref`")
        known = {"info", "warning", "urgent", "critical"}
        if set(self.after) - known or any(not 0 <= v <= 1440 for v in self.after.values()):
            raise ValueError("`after` maps info/warning/urgent/critical to 0-1440 minutes")
        return self


class CarePlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, float] = Field(
        default_factory=dict, description="thresholds that differ from the defaults, by name"
    )
    schedule: ScheduleBody = Field(default_factory=ScheduleBody)
    primary_clinician: str | None = Field(None, max_length=200)
    escalation_clinician: str | None = Field(
        None, max_length=200, description="free text, before chains; not paged"
    )
    escalation_chain: list[StepBody] = Field(
        default_factory=list, max_length=10, description="empty: the default chain"
    )

    @model_validator(mode="after")
    def _usable(self) -> CarePlanBody:
        unknown = sorted(set(self.thresholds) - set(Thresholds.names()))
        if unknown:
            raise ValueError(f"unknown threshold(s): {', '.join(unknown)}")
        problems = DEFAULT_THRESHOLDS.with_overrides(self.thresholds).problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self


def care_plan_json(plan: CarePlan) -> dict[str, Any]:
    thresholds = thresholds_for(plan)
    return {
        "patient_id": plan.patient_id,
        "thresholds": {name: getattr(thresholds, name) for name in Thresholds.names()},
        "overrides": dict(plan.threshold_overrides),
        "schedule": {"per_day": dict(plan.schedule.per_day), "timezone": plan.schedule.timezone},
        "primary_clinician": plan.primary_clinician,
        "escalation_clinician": plan.escalation_clinician,
        "escalation_chain": chain_json(plan.escalation_chain),
        "updated_at": None
        if plan.updated_at is None
        else plan.updated_at.isoformat().replace("+00:00", "Z"),
        "updated_by": plan.updated_by,
    }


@router.get("/patients/{patient_id}/care-plan", summary="A patient's care plan")
async def read_care_plan(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await authorize(
        request,
        principal,
        patient_id=patient_id,
        resource_type="CarePlan",
        interaction=Interaction.READ,
        subtype="read",
        resource_id=patient_id,
        hide=True,
    )
    async with database.read() as conn:
        await Patients(conn).get(patient_id)
        plan = await CarePlans(conn).get(patient_id)
    return care_plan_json(plan)


@router.put("/patients/{patient_id}/care-plan", summary="Replace a patient's care plan")
async def replace_care_plan(
    patient_id: str,
    body: CarePlanBody,
    request: Request,
    database: DatabaseDep,
    who: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await authorize(
        request,
        who,
        patient_id=patient_id,
        resource_type="CarePlan",
        interaction=Interaction.UPDATE,
        subtype="update",
        resource_id=patient_id,
        hide=True,
    )
    overrides = {
        name: value
        for name, value in body.thresholds.items()
        if value != getattr(DEFAULT_THRESHOLDS, name)
    }
    plan = CarePlan(
        patient_id,
        overrides,
        Schedule(dict(body.schedule.per_day), body.schedule.timezone),
        body.primary_clinician,
        body.escalation_clinician,
        tuple(EscalationStep(s.to, s.ref, dict(s.after)) for s in body.escalation_chain),
    )
    async with database.write() as conn:
        await Patients(conn).get(patient_id)
        plans = CarePlans(conn)
        await plans.put(plan, datetime.now(UTC), who.name)
        stored = await plans.get(patient_id)
    return care_plan_json(stored)
