"""Secure messages as FHIR Communication resources (read and search under /fhir/Communication).

One Communication per message; the thread it belongs to is an identifier (and its subject the
`topic`), so a client can group them. Writing goes through the messages API (care/).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.domain.errors import InvalidSearch
from medmesh.domain.messages import Message, MessageCategory, Side, Thread
from medmesh.fhir import search_params
from medmesh.fhir.bundle import searchset
from medmesh.fhir.care_reads import Loaded, read_care_resource
from medmesh.fhir.resources import instant
from medmesh.fhir.search import (
    parse_date_param,
    parse_paging,
    query_params,
    reject_unknown,
    searched_patient,
    single,
)
from medmesh.fhir.search_params import names
from medmesh.http.deps import DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, fhir_ok, fhir_search
from medmesh.http.responses import FhirResponse
from medmesh.store.messages import Messages, SentBetween

router = APIRouter(
    prefix="/fhir", tags=["fhir"], default_response_class=FhirResponse, responses=ERROR_RESPONSES
)

CATEGORY_SYSTEM = "https://medmesh.dev/fhir/CodeSystem/message-category"
THREAD_SYSTEM = "https://medmesh.dev/fhir/NamingSystem/message-thread"
_DISPLAY = {
    MessageCategory.GENERAL: "General question",
    MessageCategory.MEDICATION: "Medication",
    MessageCategory.APPOINTMENT: "Appointment",
    MessageCategory.RESULTS: "Results",
}


def communication(message: Message, thread: Thread) -> dict[str, Any]:
    patient = {"reference": f"Patient/{message.patient_id}"}
    if message.side is Side.PATIENT:
        sender = {**patient, "display": message.sender_name}
        recipients = [{"display": "Care team"}]
    else:
        sender = {"reference": f"Practitioner/{message.sender_id}", "display": message.sender_name}
        recipients = [patient]
    payload: list[dict[str, Any]] = [{"contentString": message.body}]
    for attachment in message.attachments:
        payload.append(
            {
                "contentAttachment": {
                    "contentType": attachment.content_type,
                    "size": attachment.size,
                    "url": f"/api/v1/attachments/{attachment.id}",
                }
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": message.id,
        "identifier": [{"system": THREAD_SYSTEM, "value": message.thread_id}],
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": CATEGORY_SYSTEM,
                        "code": thread.category.value,
                        "display": _DISPLAY[thread.category],
                    }
                ]
            }
        ],
        "subject": patient,
        "topic": {"text": thread.subject},
        "sent": instant(message.sent_at),
        "recipient": recipients,
        "sender": sender,
        "payload": payload,
    }
    if message.read_at is not None:
        resource["received"] = instant(message.read_at)
    return resource


def _categories(value: str | None) -> list[MessageCategory]:
    if not value:
        return []
    wanted = []
    for token in value.split(","):
        system, bar, code = token.rpartition("|")
        if bar and system != CATEGORY_SYSTEM:
            raise InvalidSearch(f"category system must be {CATEGORY_SYSTEM}")
        try:
            wanted.append(MessageCategory(code))
        except ValueError:
            raise InvalidSearch(
                f"category must be one of {', '.join(c.value for c in MessageCategory)}"
            ) from None
    return wanted


def _sent(values: list[str]) -> list[SentBetween]:
    bounds = []
    for value in values:
        try:
            parsed = parse_date_param(value)
        except InvalidSearch as error:
            raise InvalidSearch(str(error).replace("date", "sent", 1)) from None
        bounds += [SentBetween("ge" if b.op == "ge" else "lt", b.at) for b in parsed]
    return bounds


@router.get(
    "/Communication/{communication_id}",
    summary="Read a Communication (a secure message)",
    responses=fhir_ok("Communication"),
)
async def read_communication(
    communication_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    return FhirResponse(
        await read_care_resource(
            request, principal, "Communication", communication_id, _load_communication
        )
    )


async def _load_communication(conn: AsyncConnection, message_id: str) -> Loaded:
    message = await Messages(conn).message(message_id)
    thread = None if message is None else await Messages(conn).thread(message.thread_id)
    if message is None or thread is None:
        return None
    return message.patient_id, communication(message, thread)


@router.get(
    "/Communication",
    summary="Search Communications (secure messages) by patient, sent and category",
    responses=fhir_search("Communication"),
)
async def search_communications(
    request: Request, database: DatabaseDep, principal: Principal = Depends(require_principal)
) -> FhirResponse:
    params = query_params(request)
    reject_unknown(params, names(search_params.COMMUNICATION))
    paging = parse_paging(params)
    patient_id = searched_patient(params)
    sent = _sent(params.get("sent", []))
    categories = _categories(single(params, "category"))
    decisions = await search_scope(request, principal, patient_id, resource_type="Communication")
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await Messages(conn).search(
            within=within,
            sent=sent,
            categories=categories,
            limit=paging.count + 1,
            offset=paging.offset,
        )
    shown = found[: paging.count]
    if patient_id is None:
        await audit_results(
            request,
            principal,
            decisions,
            [m.patient_id for m, _ in shown],
            resource_type="Communication",
        )
    page = [communication(m, t) for m, t in shown]
    return FhirResponse(searchset(request, page, paging, len(found) > paging.count))
