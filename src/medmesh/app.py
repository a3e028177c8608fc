"""The composition root: builds the HTTP application from Settings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

import medmesh
from medmesh import wiring
from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.identity.accounts import SignIn
from medmesh.access.identity.device_certificates import DeviceTrust
from medmesh.access.identity.device_credentials import KnownDeviceCredentials
from medmesh.access.oauth.id_tokens import IdTokenSigner
from medmesh.api.alerts import router as alerts_router
from medmesh.api.break_glass import router as break_glass_router
from medmesh.api.care_plans import router as care_plans_router
from medmesh.api.erasure import router as erasure_router
from medmesh.api.events import router as events_router
from medmesh.api.fhir_writes import router as fhir_writes_router
from medmesh.api.oauth import router as oauth_router
from medmesh.care.appointments_api import router as appointments_router
from medmesh.care.attachments import AttachmentLimits
from medmesh.care.medications_api import router as medications_router
from medmesh.care.messages_api import router as messages_router
from medmesh.care.notifications_api import router as notifications_router
from medmesh.care.rpm_api import router as rpm_router
from medmesh.care.visit_rooms import VisitRooms
from medmesh.care.visits import IceConfig
from medmesh.config import Settings
from medmesh.events.bus import EventBus
from medmesh.fhir.appointments import router as fhir_appointments_router
from medmesh.fhir.audit_events import router as audit_events_router
from medmesh.fhir.bulk import router as bulk_router
from medmesh.fhir.communications import router as communications_router
from medmesh.fhir.consents import router as consents_router
from medmesh.fhir.encounters import router as encounters_router
from medmesh.fhir.everything import router as everything_router
from medmesh.fhir.export_jobs import ExportRunner, ExportSettings
from medmesh.fhir.flags import router as flags_router
from medmesh.fhir.imaging_studies import router as imaging_studies_router
from medmesh.fhir.lastn import router as lastn_router
from medmesh.fhir.medication_requests import router as medication_requests_router
from medmesh.fhir.router import router as fhir_router
from medmesh.fhir.subscriptions import router as subscriptions_router
from medmesh.heap import long_lived_heap
from medmesh.http.answer_holds import AnswerHolds
from medmesh.http.cors import AppOrigins
from medmesh.http.deps import WallClock, provide
from medmesh.http.errors import install_error_handlers
from medmesh.http.forwarded import ProxyList, TrustedProxies
from medmesh.http.headers import SecurityHeaders
from medmesh.http.rate_limit import RateLimit
from medmesh.http.request_limits import RequestSizeLimit
from medmesh.http.request_log import RequestLog
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.dicomweb import router as dicomweb_router
from medmesh.imaging.quarantine_api import router as quarantine_router
from medmesh.ingest.formats import Formats
from medmesh.ingest.http import router as ingest_router
from medmesh.ingest.known_signing_keys import KnownSigningKeys
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.paging.api import router as paging_router
from medmesh.paging.pager import PagerSettings
from medmesh.services import Services, build_formats
from medmesh.store.database import Database
from medmesh.web import session as web_session
from medmesh.web.routes import router as web_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    formats = build_formats(settings)  # a bad mapping template stops here, before any I/O

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(
            settings, formats, exports=True, mqtt=True, mllp=True, dicom=True
        )
        app.state.services = services  # for tests and operators' tools, never for routes
        provide(app, Database, services.database)
        provide(app, EventBus, services.bus)
        provide(app, AuditWriter, services.audit)
        provide(app, IngestPipeline, services.pipeline)
        provide(app, KnownDeviceCredentials, KnownDeviceCredentials())
        provide(app, KnownSigningKeys, KnownSigningKeys())
        provide(app, Formats, services.formats)
        provide(
            app,
            ImagingArchive,
            ImagingArchive(services.database, max_instance_bytes=settings.dicom_max_instance_bytes),
        )
        provide(
            app,
            SignIn,
            SignIn(
                services.database,
                wiring.lockout_policy(settings),
                redis_url=settings.redis_url,
            ),
        )
        if services.exports is not None:
            provide(app, ExportRunner, services.exports)
        try:
            with long_lived_heap():  # heap.py: the collector of a long-running process
                yield
        finally:
            await services.stop()

    app = FastAPI(
        title="medmesh",
        version=medmesh.__version__,
        description="Device readings in, FHIR R4 out.",
        lifespan=lifespan,
    )
    provide(app, Settings, settings)
    provide(app, WallClock, time.time)
    provide(app, IdTokenSigner, IdTokenSigner(settings.oauth_signing_key_file))
    provide(app, ExportSettings, wiring.export_settings(settings))
    provide(app, AttachmentLimits, wiring.attachment_limits(settings))
    provide(app, IceConfig, wiring.ice_config(settings))
    provide(app, VisitRooms, VisitRooms())
    provide(app, PagerSettings, wiring.pager_settings(settings))
    proxies = ProxyList(settings.proxies())
    provide(app, ProxyList, proxies)
    provide(app, DeviceTrust, DeviceTrust(wiring.device_ca_dir(settings)))
    # Innermost: an answer held for its audit record that fails to write fails the request, and
    # UnexpectedErrors (added next, outside it) answers 500.
    app.add_middleware(AnswerHolds)
    install_error_handlers(app)
    app.include_router(ingest_router)
    app.include_router(bulk_router)  # before fhir_router: Patient/$export is no Patient id
    app.include_router(everything_router)
    app.include_router(lastn_router)  # before fhir_router: Observation/$lastn is no id
    app.include_router(fhir_router)
    app.include_router(fhir_writes_router)
    app.include_router(flags_router)
    app.include_router(communications_router)
    app.include_router(imaging_studies_router)
    app.include_router(dicomweb_router)
    app.include_router(quarantine_router)
    app.include_router(medication_requests_router)
    app.include_router(fhir_appointments_router)
    app.include_router(rpm_router)
    app.include_router(encounters_router)
    app.include_router(audit_events_router)
    app.include_router(subscriptions_router)
    app.include_router(events_router)
    app.include_router(web_router)
    app.include_router(alerts_router)
    app.include_router(care_plans_router)
    app.include_router(consents_router)
    app.include_router(break_glass_router)
    app.include_router(erasure_router)
    app.include_router(messages_router)
    app.include_router(medications_router)
    app.include_router(appointments_router)
    app.include_router(notifications_router)
    app.include_router(paging_router)
    app.include_router(oauth_router)
    app.add_middleware(RequestSizeLimit, limits=wiring.request_limits(settings))
    if (rate_limits := wiring.rate_limits(settings)) is not None:
        app.add_middleware(
            RateLimit,
            limits=rate_limits,
            session_identity=web_session.signed_in_identity,
            redis_url=settings.redis_url,
        )
    app.add_middleware(SessionMiddleware, **web_session.middleware_options(settings))
    app.add_middleware(AppOrigins)  # CORS for registered SMART apps' origins only
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog)
    app.add_middleware(TrustedProxies, proxies=proxies)  # outermost: sees the real peer

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
