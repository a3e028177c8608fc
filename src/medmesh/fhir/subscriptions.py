"""FHIR R4 Subscription (rest-hook) under /fhir: create, read, search, delete. Notifications
are signed with a per-subscription secret, shown once on creation (docs/webhooks.md)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import require_principal, search_scope
from medmesh.access.identity.bearer import principal_for_token_id
from medmesh.access.identity.principals import ActorKind, Principal
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.domain.subscription import (
    InvalidSubscription,
    check_endpoint,
    parse_criteria,
)
from medmesh.fhir import search_params
from medmesh.fhir.bundle import base_url, searchset
from medmesh.fhir.search import parse_paging, query_params, reject_unknown, single
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.registry import Patients
from medmesh.store.subscriptions import ACTIVE, ERROR, OFF, StoredSubscription, Subscriptions
from medmesh.store.tokens import ApiTokens
from medmesh.store.webhook_deliveries import WebhookDeliveries

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

SECRET_HEADER = "X-Medmesh-Signing-Secret"  # noqa: S105  (a header name, not a secret)
STATUSES = ("requested", ACTIVE, ERROR, OFF)


def _invalid(kind: str, exc: InvalidSubscription) -> PydanticCustomError:
    return PydanticCustomError(kind, str(exc).replace("{", "(").replace("}", ")"))


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    extension: list[dict[str, Any]] | None = None
    type: Literal["rest-hook"]
    endpoint: str
    payload: Literal["application/fhir+json"] | None = None
    header: list[str] | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        try:
            return check_endpoint(value)
        except InvalidSubscription as exc:
            raise _invalid("endpoint", exc) from None

    @field_validator("header")
    @classmethod
    def _header(cls, value: list[str] | None) -> None:
        if value:
            raise PydanticCustomError(
                "not_supported",
                "channel headers are not supported; receivers check X-Medmesh-Signature",
            )
        return None


class SubscriptionIn(BaseModel):
    """A Subscription as a client submits it; other elements, modifiers included, are refused."""

    model_config = ConfigDict(extra="forbid")

    resourceType: Literal["Subscription"]
    id: str | None = None  # the server assigns the id
    meta: dict[str, Any] | None = None
    language: str | None = None
    text: dict[str, Any] | None = None
    extension: list[dict[str, Any]] | None = None
    contact: list[dict[str, Any]] | None = None
    status: Literal["requested"]
    end: str | None = None
    reason: str = Field(min_length=1)
    criteria: str = Field(min_length=1, max_length=500)
    channel: ChannelIn

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value: str) -> str:
        try:
            parse_criteria(value)
        except InvalidSubscription as exc:
            raise _invalid("criteria", exc) from None
        return value

    @field_validator("end")
    @classmethod
    def _end(cls, value: str | None) -> None:
        if value is not None:
            raise PydanticCustomError(
                "not_supported", "end is not supported; DELETE the subscription to stop it"
            )
        return None


def _resource(subscription: StoredSubscription) -> dict[str, Any]:
    resource = {"resourceType": "Subscription", "id": subscription.id, **subscription.resource}
    resource["status"] = subscription.status
    if subscription.status == ERROR and subscription.last_error:
        resource["error"] = subscription.last_error
    return resource


def _criteria_error(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", "criteria"), "msg": message, "type": "value_error"}]
    )


@router.post(
    "/Subscription",
    status_code=201,
    summary="Create a rest-hook Subscription",
    responses={
        201: {
            **fhir_ok("Subscription", 201)[201],
            "description": f"Created. The {SECRET_HEADER} header holds the signing secret, "
            "shown this once.",
        }
    },
)
async def create_subscription(
    body: SubscriptionIn,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    criteria = parse_criteria(body.criteria)
    # Subscribing is searching ahead of time: the subscriber must be able to search what the
    # criteria name. Notifications are checked again when each event happens.
    # Decided first: a refusal (403) says nothing about whether the patient exists.
    await search_scope(
        request, principal, criteria.patient_id, resource_type=criteria.resource_type
    )
    if criteria.patient_id is not None:
        async with database.read() as conn:
            try:
                await Patients(conn).get(criteria.patient_id)
            except NotFound:
                raise _criteria_error("the criteria name no known Patient") from None
    submitted = body.model_dump(mode="json", exclude_none=True, exclude={"id", "status"})
    subscription = StoredSubscription(
        id=str(uuid.uuid4()),
        criteria=body.criteria,
        endpoint=body.channel.endpoint,
        signing_secret=secrets.token_urlsafe(32),
        status=ACTIVE,
        resource={k: v for k, v in submitted.items() if k != "resourceType"},
        created_at=datetime.now(UTC),
        created_by=principal.token_id or principal.id,
    )
    async with database.write() as conn:
        await Subscriptions(conn).add(subscription)
    headers = {
        "Location": f"{base_url(request)}/Subscription/{subscription.id}",
        SECRET_HEADER: subscription.signing_secret,
    }
    return FhirResponse(_resource(subscription), status_code=201, headers=headers)


@router.get(
    "/Subscription/{subscription_id}",
    summary="Read a Subscription",
    responses=fhir_ok("Subscription"),
)
async def read_subscription(
    subscription_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    return FhirResponse(_resource(await _own(request, principal, subscription_id)))


async def _token_ids(conn: AsyncConnection, principal: Principal) -> list[str]:
    tokens = ApiTokens(conn)
    if principal.kind is ActorKind.USER:
        return await tokens.ids_for(user_id=principal.id)
    return await tokens.ids_for(client_id=principal.id)


async def _own(request: Request, principal: Principal, subscription_id: str) -> StoredSubscription:
    """A subscription belongs to whoever made it (the same account or client, with any of its
    tokens); others do not see it."""
    async with database_of(request).read() as conn:
        try:
            subscription = await Subscriptions(conn).get(subscription_id)
        except NotFound:
            subscription = None
        owner = (
            None
            if subscription is None
            else await principal_for_token_id(conn, subscription.created_by)
        )
    if (
        subscription is None
        or owner is None
        or (owner.kind, owner.id)
        != (
            principal.kind,
            principal.id,
        )
    ):
        raise NotFound(f"Subscription/{subscription_id} is not known")
    return subscription


@router.get(
    "/Subscription",
    summary="Search Subscriptions, by status",
    responses=fhir_search("Subscription"),
)
async def search_subscriptions(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.SUBSCRIPTION))
    paging = parse_paging(params)
    status = single(params, "status")
    if status is not None and status not in STATUSES:
        raise InvalidSearch(f"status must be one of {', '.join(STATUSES)}")
    async with database.read() as conn:
        # Made with any token of the same account or client (a service token is its own).
        mine = set(await _token_ids(conn, principal))
        if principal.token_id is not None:
            mine.add(principal.token_id)
        found = await Subscriptions(conn).search(
            status, paging.count + 1, paging.offset, created_by=mine
        )
    page = [_resource(s) for s in found[: paging.count]]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))


@router.delete(
    "/Subscription/{subscription_id}",
    summary="Turn a Subscription off",
    responses=fhir_ok("Subscription"),
)
async def delete_subscription(
    subscription_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> FhirResponse:
    """The subscription is kept, with status `off`; its pending notifications are dropped."""
    await _own(request, principal, subscription_id)
    async with database.write() as conn:
        subscriptions = Subscriptions(conn)
        await subscriptions.get(subscription_id)
        await subscriptions.set_status(subscription_id, OFF)
        await WebhookDeliveries(conn).cancel_pending(subscription_id, "subscription off")
        subscription = await subscriptions.get(subscription_id)
    return FhirResponse(_resource(subscription))
