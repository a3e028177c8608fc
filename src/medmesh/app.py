"""The composition root: builds the HTTP application from Settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

import medmesh
from medmesh.access.headers import SecurityHeaders
from medmesh.config import Settings
from medmesh.fhir.errors import install_error_handlers
from medmesh.fhir.router import router as fhir_router
from medmesh.ingest.formats import Formats
from medmesh.ingest.http import router as ingest_router
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.mqtt import MqttIngest
from medmesh.ingest.omh import OMH, parse_omh
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.ingest.templates import load_templates, parser_for
from medmesh.request_log import RequestLog
from medmesh.store import migrate
from medmesh.store.database import Database


def build_formats(settings: Settings) -> Formats:
    """Every payload format the adapters accept: native, omh and each mapping template.

    A bad template raises InvalidTemplate here, so the server or worker does not start.
    """
    limit = settings.max_batch_readings
    formats = Formats(limit)
    formats.register(OMH, lambda body, device_id: parse_omh(body, device_id, limit))
    if settings.templates_dir is not None:
        for template in load_templates(settings.templates_dir):
            formats.register(template.format_name, parser_for(template, limit))
    return formats


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    formats = build_formats(settings)  # a bad mapping template stops here, before any I/O

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        if settings.auto_migrate:
            await migrate.upgrade(database)
        pipeline = IngestPipeline(
            database, max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)
        )
        app.state.database = database
        app.state.pipeline = pipeline
        app.state.formats = formats
        tasks: list[asyncio.Task[None]] = []
        mqtt = settings.mqtt()
        if mqtt is not None:
            app.state.mqtt = MqttIngest(mqtt, database, pipeline, formats)
            tasks.append(asyncio.create_task(app.state.mqtt.run()))
        mllp: MllpServer | None = None
        if settings.mllp_port is not None:
            mllp = MllpServer(database, pipeline, max_message_bytes=settings.mllp_max_message_bytes)
            await mllp.start(settings.mllp_host, settings.mllp_port, tls=settings.mllp_tls())
            app.state.mllp = mllp
        try:
            yield
        finally:
            if mllp is not None:
                await mllp.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await database.dispose()

    app = FastAPI(
        title="medmesh",
        version=medmesh.__version__,
        description="Device readings in, FHIR R4 out.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(ingest_router)
    app.include_router(fhir_router)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
