"""The services every medmesh process runs, built once from Settings: the database, the
ingest pipeline, the payload formats, the event bus and the background workers, wired
together. `medmesh serve` and `medmesh ingest-worker` both start them here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from medmesh import wiring
from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.identity.device_certificates import DeviceTrust
from medmesh.access.policy.subscribers import SubscriberCheck
from medmesh.care.notifications import Notifier
from medmesh.config import Settings
from medmesh.crypto.local import local_cipher
from medmesh.events.bus import EventBus, InProcessBus
from medmesh.events.postgres import PostgresBus
from medmesh.events.readings import readings_publisher
from medmesh.fhir.export_jobs import ExportRunner
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.dicom_server import DicomServer
from medmesh.ingest.after_commit import AfterCommit
from medmesh.ingest.formats import Formats
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.mqtt import MqttIngest
from medmesh.ingest.omh import OMH, parse_omh
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.ingest.signed_readings import SignaturePolicy
from medmesh.ingest.templates import load_templates, parser_for
from medmesh.paging.pager import Pager
from medmesh.rules.engine import RuleEngine
from medmesh.rules.periodic import PeriodicChecks
from medmesh.rules.urgency import may_alert_at_once
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.partitions import PartitionMaintainer
from medmesh.webhooks.dispatcher import WebhookDispatcher
from medmesh.workers import CallWorker, Workers


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


@dataclass
class Services:
    """What a process runs, and the one place its workers are started and stopped.

    `medmesh serve` (app.py) asks for every worker, `medmesh ingest-worker` (worker.py) for
    MQTT only; each runs only where the settings configure it. Workers start in a fixed order
    (the event bus, webhook sender and periodic checks before anything that takes input) and
    stop in the reverse order (inputs first, so the batch in hand still reaches the rest).
    """

    settings: Settings
    database: Database
    pipeline: IngestPipeline
    formats: Formats
    bus: EventBus
    audit: AuditWriter
    webhooks: WebhookDispatcher
    alert_checks: PeriodicChecks | None = None
    exports: ExportRunner | None = None
    mqtt: MqttIngest | None = None
    mllp: MllpServer | None = None
    dicom: DicomServer | None = None
    notifier: Notifier | None = None
    pager: Pager | None = None
    workers: Workers = field(default_factory=Workers)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        formats: Formats | None = None,
        *,
        exports: bool = False,
        mqtt: bool = False,
        mllp: bool = False,
        dicom: bool = False,
    ) -> Services:
        """Build the services and start the workers: the webhook sender and periodic checks
        always, the export runner, MQTT consumer and MLLP listener when asked for and
        configured."""
        database = build_database(settings)
        if settings.auto_migrate:
            await migrate.upgrade(database)
        after_commit = AfterCommit(
            database,
            recover_after=timedelta(seconds=settings.after_commit_recover_seconds),
            max_round_readings=settings.after_commit_round_readings,
            urgent=may_alert_at_once if settings.after_commit_urgent_first else None,
        )
        pipeline = IngestPipeline(
            database,
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
            reassignment_backfill=timedelta(hours=settings.reassignment_backfill_hours),
            after_commit=after_commit,
            group_commit=timedelta(milliseconds=settings.group_commit_ms),
            signatures=SignaturePolicy(
                settings.require_signed_readings,
                timedelta(seconds=settings.signature_max_skew_seconds),
            ),
        )
        bus = build_bus(settings)
        pipeline.on_committed_round(readings_publisher(bus))
        engine = RuleEngine(database, bus, pipeline.now, held=pipeline.after_commit.held)
        pipeline.on_committed_round(engine.on_committed_round)
        # Audit records of concurrent requests share write transactions (group commit).
        audit = AuditWriter(database)
        webhooks = WebhookDispatcher(
            database,
            bus,
            wiring.webhook_policy(settings),
            audience=SubscriberCheck(database, audit),
        )
        services = cls(
            settings, database, pipeline, formats or build_formats(settings), bus, audit, webhooks
        )
        try:
            await services._start_workers(exports=exports, mqtt=mqtt, mllp=mllp, dicom=dicom)
        except BaseException:
            await services._close()
            raise
        return services

    async def _start_workers(self, *, exports: bool, mqtt: bool, mllp: bool, dicom: bool) -> None:
        settings, workers = self.settings, self.workers
        await workers.start("event bus", self.bus)
        await workers.start("observation partitions", PartitionMaintainer(self.database))
        await workers.start("webhook sender", self.webhooks)
        if settings.alert_check_interval_seconds > 0:
            self.alert_checks = PeriodicChecks(
                self.database, self.bus, settings.alert_check_interval_seconds
            )
            await workers.start("periodic alert checks", self.alert_checks)
        if (notify := wiring.notifier_settings(settings)) is not None:
            self.notifier = Notifier(self.database, self.bus, notify)
            await workers.start("email notifications", self.notifier)
        if settings.paging_enabled:
            self.pager = Pager(self.database, self.bus, wiring.pager_settings(settings))
            await workers.start("pager", self.pager)
        await workers.start("after-commit work (rules, events)", self.pipeline.after_commit)
        if exports and settings.export_runner:
            self.exports = ExportRunner(self.database, wiring.export_settings(settings))
            await workers.start("export runner", self.exports)
        if mllp and settings.mllp_port is not None:
            server = self.mllp = MllpServer(
                self.database,
                self.pipeline,
                max_message_bytes=settings.mllp_max_message_bytes,
                limits=wiring.mllp_limits(settings),
                device_trust=DeviceTrust(wiring.device_ca_dir(settings)),
            )
            port, tls = settings.mllp_port, wiring.mllp_tls(settings)
            listener = CallWorker(
                lambda: server.start(settings.mllp_host, port, tls=tls), server.stop
            )
            await workers.start("MLLP listener", listener)
        if dicom and (dicom_settings := wiring.dicom_settings(settings)) is not None:
            archive = ImagingArchive(
                self.database, max_instance_bytes=dicom_settings.max_instance_bytes
            )
            self.dicom = DicomServer(archive, dicom_settings)
            await workers.start("DICOM listener", self.dicom)
        if mqtt and (mqtt_settings := wiring.mqtt_settings(settings)) is not None:
            self.mqtt = MqttIngest(mqtt_settings, self.database, self.pipeline, self.formats)
            await workers.start("MQTT ingest", self.mqtt)

    async def stop(self) -> None:
        """Stop the workers (newest first), then flush the audit and close the database, even
        when a worker did not stop in time (`WorkersDidNotStop`, raised after)."""
        try:
            await self.workers.stop()
        finally:
            await self._close()

    async def _close(self) -> None:
        await self.audit.aclose()
        await self.database.dispose()
