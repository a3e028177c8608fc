"""`medmesh ingest-worker` and `medmesh dicom-worker`: MQTT ingest, or the DICOM listener,
without the HTTP API, one process per worker."""

from __future__ import annotations

import asyncio
import logging
import signal

from medmesh import logs
from medmesh.config import Settings
from medmesh.heap import long_lived_heap
from medmesh.services import Services

log = logging.getLogger(__name__)


async def run_ingest_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then finish and acknowledge the batch in hand, leave the
    shared subscription and exit (`Services.stop`)."""
    logs.configure(fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
    services = await Services.start(settings, mqtt=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, stopping.set)
    try:
        with long_lived_heap():  # as the HTTP app (heap.py)
            await stopping.wait()
    finally:
        mqtt = services.mqtt
        await services.stop()
        log.info("MQTT ingest stopped after %d messages", mqtt.processed if mqtt else 0)


async def run_dicom_worker(settings: Settings) -> None:
    """The DICOM listener alone, until SIGTERM or SIGINT; associations in progress end."""
    logs.configure(fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
    services = await Services.start(settings, dicom=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, stopping.set)
    try:
        with long_lived_heap():
            await stopping.wait()
    finally:
        await services.stop()
