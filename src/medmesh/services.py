"""The services every medmesh process runs, built once from Settings: the database, the
ingest pipeline, the payload formats and the event bus, wired together. `medmesh serve` and
`medmesh ingest-worker` both start them here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from medmesh.access.audit_writer import AuditWriter
from medmesh.access.subscribers import SubscriberCheck
from medmesh.config import Settings
from medmesh.crypto.local import local_cipher
from medmesh.domain.reading import Reading
from medmesh.events.bus import EventBus, InProcessBus
from medmesh.events.model import READINGS, Event
from medmesh.events.postgres import PostgresBus
from medmesh.ingest.formats import Formats
from medmesh.ingest.omh import OMH, parse_omh
from medmesh.ingest.pipeline import CommittedListener, IngestPipeline
from medmesh.ingest.templates import load_templates, parser_for
from medmesh.rules.engine import RuleEngine
from medmesh.rules.periodic import PeriodicChecks
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.webhooks.dispatcher import WebhookDispatcher


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


def build_database(settings: Settings) -> Database:
    """The database, carrying the cipher built from the key settings (docs/encryption.md)."""
    cipher = local_cipher(settings.database_url, settings.master_key_file, settings.key_store_path)
    return Database(settings.database_url, cipher=cipher)


def build_bus(settings: Settings) -> EventBus:
    if settings.event_bus == "postgres":
        if not settings.database_url.startswith("postgres"):
            raise ValueError("MEDMESH_EVENT_BUS=postgres needs a PostgreSQL database")
        return PostgresBus(settings.database_url)
    return InProcessBus()


# Observation ids one `readings` event names at most: keeps it well under the 8000-byte NOTIFY
# limit (events/postgres.py) and each webhook notification to a bounded size.
READINGS_PER_EVENT = 100


def readings_publisher(bus: EventBus) -> CommittedListener:
    """A `readings` event per patient (per 100 readings) for every committed batch: observation
    ids, codes and devices, no values."""

    async def publish(readings: Sequence[Reading]) -> None:
        by_patient: dict[str, list[Reading]] = {}
        for reading in readings:
            by_patient.setdefault(reading.patient_id, []).append(reading)
        for patient_id, all_mine in by_patient.items():
            for start in range(0, len(all_mine), READINGS_PER_EVENT):
                mine = all_mine[start : start + READINGS_PER_EVENT]
                data = {
                    "count": len(mine),
                    "codes": sorted({r.measure.code for r in mine}),
                    "devices": sorted({r.device_id for r in mine}),
                    "observations": [r.observation_id for r in mine],
                }
                await bus.publish(Event(READINGS, patient_id, data))

    return publish


@dataclass
class Services:
    settings: Settings
    database: Database
    pipeline: IngestPipeline
    formats: Formats
    bus: EventBus
    webhooks: WebhookDispatcher | None = None
    alert_checks: PeriodicChecks | None = None
    audit: AuditWriter | None = None

    @classmethod
    async def start(cls, settings: Settings, formats: Formats | None = None) -> Services:
        database = build_database(settings)
        if settings.auto_migrate:
            await migrate.upgrade(database)
        pipeline = IngestPipeline(
            database,
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
            reassignment_backfill=timedelta(hours=settings.reassignment_backfill_hours),
        )
        bus = build_bus(settings)
        await bus.start()
        pipeline.on_committed(readings_publisher(bus))
        pipeline.on_committed(RuleEngine(database, bus, pipeline.now).on_committed)
        # Audit records of concurrent requests share write transactions (group commit).
        audit = AuditWriter(database)
        webhooks = WebhookDispatcher(
            database, bus, settings.webhook_policy(), audience=SubscriberCheck(database, audit)
        )
        await webhooks.start()
        alert_checks = None
        if settings.alert_check_interval_seconds > 0:
            alert_checks = PeriodicChecks(database, bus, settings.alert_check_interval_seconds)
            alert_checks.start()
        formats = formats or build_formats(settings)
        return cls(settings, database, pipeline, formats, bus, webhooks, alert_checks, audit)

    async def stop(self) -> None:
        if self.alert_checks is not None:
            await self.alert_checks.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.bus.stop()
        if self.audit is not None:
            await self.audit.aclose()
        await self.database.dispose()
