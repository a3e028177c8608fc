"""`medmesh ingest-worker`: MQTT ingest without the HTTP API, one process per worker."""

from __future__ import annotations

import asyncio
import logging
import signal

from medmesh import logs
from medmesh.config import Settings
from medmesh.ingest.mqtt import MqttIngest
from medmesh.services import Services

log = logging.getLogger(__name__)


async def run_ingest_worker(settings: Settings) -> None:
    logs.configure(fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
    mqtt = settings.mqtt()
    assert mqtt is not None
    services = await Services.start(settings)
    ingest = MqttIngest(mqtt, services.database, services.pipeline, services.formats)
    consuming = asyncio.create_task(ingest.run())
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        # Finish and acknowledge the batch in hand, leave the shared subscription, then exit.
        loop.add_signal_handler(stop, lambda: asyncio.ensure_future(ingest.stop()))
    try:
        await consuming
    finally:
        log.info("MQTT ingest stopped after %d messages", ingest.processed)
        await services.stop()
