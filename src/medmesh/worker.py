"""`medmesh ingest-worker`: MQTT ingest without the HTTP API, one process per worker."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from medmesh.app import build_formats
from medmesh.config import Settings
from medmesh.ingest.mqtt import MqttIngest
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store import migrate
from medmesh.store.database import Database

log = logging.getLogger(__name__)


async def run_ingest_worker(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    mqtt = settings.mqtt()
    assert mqtt is not None
    database = Database(settings.database_url)
    if settings.auto_migrate:
        await migrate.upgrade(database)
    pipeline = IngestPipeline(
        database, max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)
    )
    ingest = MqttIngest(mqtt, database, pipeline, build_formats(settings))
    consuming = asyncio.create_task(ingest.run())
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, consuming.cancel)
    try:
        await consuming
    except asyncio.CancelledError:
        pass
    finally:
        log.info("MQTT ingest stopped after %d messages", ingest.processed)
        await database.dispose()
