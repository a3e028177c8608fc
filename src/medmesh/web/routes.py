"""The web UI's routes, in one router for the app to include: sign-in, the clinician pages,
the patient's own page, live updates, alert actions, and the static files (vendored htmx and
uPlot, our CSS and JS)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from medmesh.web import (
    actions,
    auth,
    calendar,
    care,
    caregivers,
    imaging,
    live,
    me,
    messages,
    pages,
    paging,
    patient_care,
    readings,
    rosters,
    rpm,
    smart_authorize,
    visits,
)
from medmesh.web.templating import STATIC_DIR

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(pages.router)
router.include_router(me.router)
router.include_router(caregivers.router)
router.include_router(messages.router)
router.include_router(care.router)
router.include_router(imaging.router)
router.include_router(patient_care.router)
router.include_router(calendar.router)
router.include_router(readings.router)
router.include_router(live.router)
router.include_router(actions.router)
router.include_router(smart_authorize.router)
router.include_router(visits.router)
router.include_router(rpm.router)
router.include_router(visits.sockets)
router.include_router(paging.router)
router.include_router(rosters.router)
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
