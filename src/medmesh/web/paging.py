"""A page's link: /page/{code}. It opens after sign-in (with the second factor for staff),
shows the alerts the page announced, as the policy allows, and acknowledges them in one
click (naming who and from which channel) or snoozes them with a reason and an end time.
An unknown, expired, used or someone else's code shows a plain notice and does nothing.

A caregiver's page (docs/paging.md#caregivers) shows the alerts their consent lets them see;
"Seen" acknowledges their own page only: the clinical alert stays open for the care team,
whose escalation goes on, and a caregiver cannot snooze."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from medmesh.access.identity.principals import Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.alerts import Alert, AlertStatus
from medmesh.domain.errors import Conflict, NotFound
from medmesh.http.deps import BusDep, DatabaseDep, database_of
from medmesh.paging import codes
from medmesh.paging.repository import ACKNOWLEDGED, CLOSED, Delivery, Page, Pages, Snoozes
from medmesh.rules import lifecycle
from medmesh.store.alerts import Alerts
from medmesh.web import session
from medmesh.web.access import open_record
from medmesh.web.responses import WebRoute, problem
from medmesh.web.templating import page as render

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_REASON = 200
SNOOZE_MINUTES = (15, 30, 60, 120, 240, 480)

GONE = (
    "This page link has expired, was already used, or is not yours. It does nothing by "
    "itself: your open alerts are on the patient panel."
)


def _moment(request: Request) -> datetime:
    return datetime.fromtimestamp(session.now(request), UTC)


async def _signed_in(request: Request, code: str) -> session.SessionUser:
    try:  # staff, and caregivers for their own pages
        return await session.signed_in_as(request, Role.CLINICIAN, Role.ORG_ADMIN, Role.CAREGIVER)
    except session.SignInRequired:
        session.remember_return(request, f"/page/{codes.normalized(code)}")
        raise


async def _valid(
    request: Request, user: session.SessionUser, code: str
) -> tuple[Page, Delivery] | None:
    async with database_of(request).read() as conn:
        found = await Pages(conn).by_code(codes.code_hash(code))
    if found is None:
        return None
    page, delivery = found
    now = _moment(request)
    if (
        page.recipient_id != user.user_id
        or delivery.code_used_at is not None
        or delivery.code_expires_at is None
        or delivery.code_expires_at <= now
    ):
        return None
    return page, delivery


async def _alerts(request: Request, user: session.SessionUser, page: Page) -> list[Alert]:
    """The page's alerts the person may see (each look decided and audited)."""
    async with database_of(request).read() as conn:
        ids = await Pages(conn).alert_ids(page.id)
        found: list[Alert] = []
        for alert_id in ids:
            try:
                found.append(await Alerts(conn).get(alert_id))
            except NotFound:
                continue
    shown: list[Alert] = []
    for alert in found:
        try:
            await open_record(
                request, user, alert.patient_id, resource_type="Flag", resource_id=alert.id
            )
        except NotFound:
            continue
        shown.append(alert)
    return shown


def _who(user: session.SessionUser) -> dict[str, object]:
    """The template's person: staff as `clinician` (their navigation), others as `user`."""
    caregiver = user.role is Role.CAREGIVER
    return {"clinician" if user.is_staff else "user": user, "caregiver": caregiver}


def _gone(request: Request) -> Response:
    return problem(request, 410, "Link no longer valid", GONE)


@router.get("/page/{code}")
async def open_page(request: Request, code: str) -> Response:
    user = await _signed_in(request, code)
    valid = await _valid(request, user, code)
    if valid is None:
        return _gone(request)
    page, delivery = valid
    alerts = await _alerts(request, user, page)
    context = {
        **_who(user),
        "code": codes.normalized(code),
        "alerts": alerts,
        "open_count": sum(a.status is AlertStatus.OPEN for a in alerts),
        "channel": delivery.channel_kind,
        "snooze_minutes": SNOOZE_MINUTES,
    }
    return render(request, "page.html", context)


async def _use(request: Request, code: str) -> tuple[session.SessionUser, Page, Delivery] | None:
    await session.check_csrf(request)
    user = await _signed_in(request, code)
    valid = await _valid(request, user, code)
    if valid is None:
        return None
    page, delivery = valid
    async with database_of(request).write() as conn:
        if not await Pages(conn).use_code(delivery.id, _moment(request)):
            return None  # a second click, or a race: the first one counts
    return user, page, delivery


@router.post("/page/{code}/acknowledge")
async def acknowledge(request: Request, code: str, database: DatabaseDep, bus: BusDep) -> Response:
    used = await _use(request, code)
    if used is None:
        return _gone(request)
    user, page, delivery = used
    who = f"{user.display_name} (paged by {delivery.channel_kind})"
    done: list[str] = []
    # A caregiver acknowledges their own page only: the alert stays with the care team.
    paged = [] if user.role is Role.CAREGIVER else await _alerts(request, user, page)
    for alert in paged:
        if alert.status is not AlertStatus.OPEN:
            continue
        await open_record(
            request,
            user,
            alert.patient_id,
            resource_type="Flag",
            interaction=Interaction.UPDATE,
            subtype="update",
            resource_id=alert.id,
        )
        try:
            await lifecycle.acknowledge(database, bus, alert.id, who, at=_moment(request))
        except Conflict:
            continue
        done.append(alert.id)
    async with database.write() as conn:
        pages = Pages(conn)
        await pages.set_status(
            page.id,
            ACKNOWLEDGED,
            acknowledged_at=_moment(request),
            acknowledged_by=user.user_id,
            acknowledged_via=delivery.channel_kind,
        )
        await pages.close_for_alerts(done, except_page=page.id)
    context = {**_who(user), "count": len(done), "channel": delivery.channel_kind}
    return render(request, "page_done.html", context)


@router.post("/page/{code}/snooze")
async def snooze(request: Request, code: str, database: DatabaseDep) -> Response:
    form = await request.form()
    reason, minutes = form.get("reason"), form.get("minutes")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        return problem(
            request, 400, "Reason needed", f"Give a reason of 1 to {MAX_REASON} characters."
        )
    if not isinstance(minutes, str) or not minutes.isdigit() or int(minutes) not in SNOOZE_MINUTES:
        return problem(request, 400, "Snooze length", "Choose one of the offered lengths.")
    signed_in = await _signed_in(request, code)
    if signed_in.role is Role.CAREGIVER:
        return problem(
            request, 403, "Not for caregivers", "Only the care team can snooze an alert."
        )
    used = await _use(request, code)
    if used is None:
        return _gone(request)
    user, page, _ = used
    now = _moment(request)
    until = now + timedelta(minutes=int(minutes))
    snoozed: list[str] = []
    for alert in await _alerts(request, user, page):
        if alert.status is not AlertStatus.OPEN:
            continue
        await open_record(
            request,
            user,
            alert.patient_id,
            resource_type="Flag",
            interaction=Interaction.UPDATE,
            subtype="update",
            resource_id=alert.id,
        )
        async with database.write() as conn:
            await Snoozes(conn).set(
                alert.id, alert.patient_id, until, alert.severity, reason.strip(), user.user_id, now
            )
        snoozed.append(alert.id)
    async with database.write() as conn:
        await Pages(conn).set_status(page.id, CLOSED)
        await Pages(conn).close_for_alerts(snoozed, except_page=page.id)
    context = {"clinician": user, "count": len(snoozed), "until": until}
    return render(request, "page_snoozed.html", context)
