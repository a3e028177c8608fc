"""Part of the composition root: each package's own small settings object, built from the
deployment's `Settings`, so that no package below the root reads `Settings` itself."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

from medmesh.access.identity.credentials import DEVICE_SECRET_PREFIX
from medmesh.access.identity.lockout import LockoutPolicy
from medmesh.care.attachments import AttachmentLimits
from medmesh.care.notifications import NotifierSettings
from medmesh.care.visits import IceConfig
from medmesh.config import Settings
from medmesh.crypto.device_ca import CRL
from medmesh.crypto.local import default_key_paths
from medmesh.fhir.export_jobs import ExportSettings
from medmesh.http.rate_limit import Budget, RateLimits
from medmesh.http.request_limits import RequestLimits
from medmesh.imaging.dicom_server import DicomSettings, parse_allowed
from medmesh.ingest.mllp_guard import MllpLimits, parse_networks
from medmesh.ingest.mqtt import MqttSettings
from medmesh.paging.channels import SmtpServer
from medmesh.paging.pager import PagerSettings
from medmesh.webhooks.policy import WebhookPolicy


def lockout_policy(settings: Settings) -> LockoutPolicy:
    return LockoutPolicy(
        max_failures=settings.signin_max_failures,
        lock_for=timedelta(minutes=settings.signin_lockout_minutes),
        address_max_failures=settings.signin_address_max_failures,
        address_window=timedelta(minutes=settings.signin_address_window_minutes),
    )


def request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        body_bytes=settings.max_request_body_bytes,
        body_bytes_by_prefix=(
            ("/ingest/", settings.max_body_bytes),
            # STOW-RS: a few instances a request, each up to the DICOM instance limit.
            ("/dicomweb/", settings.dicom_max_instance_bytes + 1_048_576),
            # Messages carry attachments: room for all of them and the form around them.
            *((prefix, _message_body_bytes(settings)) for prefix in MESSAGE_PREFIXES),
        ),
        url_bytes=settings.max_url_bytes,
        header_count=settings.max_request_headers,
    )


# Where secure messages (with their attachments) are posted: the JSON API and the web forms.
MESSAGE_PREFIXES = ("/api/v1/threads", "/me/messages", "/inbox/threads")


def _message_body_bytes(settings: Settings) -> int:
    attachments = settings.message_attachment_max_bytes * settings.message_max_attachments
    return max(settings.max_request_body_bytes, attachments + 131_072)


def attachment_limits(settings: Settings) -> AttachmentLimits:
    return AttachmentLimits(
        max_bytes=settings.message_attachment_max_bytes,
        max_count=settings.message_max_attachments,
    )


def notifier_settings(settings: Settings) -> NotifierSettings | None:
    """Email notifications, when an SMTP server is configured."""
    if settings.smtp_host is None:
        return None
    base = (settings.public_base_url or "http://localhost:8000").rstrip("/")
    return NotifierSettings(
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        sender=settings.smtp_from,
        sign_in_url=f"{base}/me",
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        reminder_before=timedelta(hours=settings.notify_reminder_hours),
        poll_seconds=settings.notify_poll_seconds,
    )


def pager_settings(settings: Settings) -> PagerSettings:
    """The pager: e-mail through the notification SMTP server (when set), links to this
    server's public URL."""
    smtp = None
    if settings.smtp_host is not None:
        smtp = SmtpServer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    return PagerSettings(
        base_url=(settings.public_base_url or "http://localhost:8000").rstrip("/"),
        smtp=smtp,
        hold=timedelta(seconds=settings.paging_hold_seconds),
        max_pages_per_alert=settings.paging_max_per_alert,
        poll_seconds=settings.paging_poll_seconds,
    )


def rate_limits(settings: Settings) -> RateLimits | None:
    if not settings.rate_limit_enabled:
        return None
    return RateLimits(
        device=Budget(settings.rate_limit_device_per_minute, settings.rate_limit_device_burst),
        client=Budget(settings.rate_limit_client_per_minute, settings.rate_limit_client_burst),
        anonymous=Budget(
            settings.rate_limit_anonymous_per_minute, settings.rate_limit_anonymous_burst
        ),
        device_secret_prefix=f"{DEVICE_SECRET_PREFIX}_",
    )


def webhook_policy(settings: Settings) -> WebhookPolicy:
    return WebhookPolicy(
        timeout_seconds=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        retry_seconds=tuple(settings.webhook_retry_seconds),
        ca_file=settings.webhook_ca_file,
    )


def mllp_tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.mllp_cert_file:
        if settings.mllp_client_ca_file:
            raise ValueError("MEDMESH_MLLP_CLIENT_CA_FILE needs MEDMESH_MLLP_CERT_FILE (TLS)")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.mllp_cert_file, settings.mllp_key_file)
    if settings.mllp_client_ca_file:
        context.load_verify_locations(cafile=settings.mllp_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def dicom_settings(settings: Settings) -> DicomSettings | None:
    """The DICOM listener's settings; None where no port is configured."""
    if settings.dicom_port is None:
        return None
    tls = None
    if settings.dicom_cert_file:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(settings.dicom_cert_file, settings.dicom_key_file)
        if settings.dicom_client_ca_file:
            tls.load_verify_locations(cafile=settings.dicom_client_ca_file)
            tls.verify_mode = ssl.CERT_REQUIRED
    elif settings.dicom_client_ca_file:
        raise ValueError("MEDMESH_DICOM_CLIENT_CA_FILE needs MEDMESH_DICOM_CERT_FILE (TLS)")
    return DicomSettings(
        host=settings.dicom_host,
        port=settings.dicom_port,
        ae_title=settings.dicom_ae_title,
        allowed=parse_allowed(settings.dicom_allowed_aes),
        max_instance_bytes=settings.dicom_max_instance_bytes,
        max_associations=settings.dicom_max_associations,
        tls=tls,
    )


def mllp_limits(settings: Settings) -> MllpLimits:
    return MllpLimits(
        allowed_senders=parse_networks(settings.mllp_allowed_senders),
        idle_timeout=settings.mllp_idle_timeout_seconds,
        read_timeout=settings.mllp_read_timeout_seconds,
        max_connections=settings.mllp_max_connections,
        max_connections_per_address=settings.mllp_max_connections_per_address,
        max_buffered_bytes=settings.mllp_max_buffered_bytes,
    )


def mqtt_settings(settings: Settings) -> MqttSettings | None:
    """The MQTT consumer's settings; None where no broker is configured."""
    if not settings.mqtt_host:
        return None
    return MqttSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        client_id=settings.mqtt_client_id,
        shared_group=settings.mqtt_shared_group or None,
        ca_file=settings.mqtt_ca_file,
        cert_file=settings.mqtt_cert_file,
        key_file=settings.mqtt_key_file,
    )


def export_settings(settings: Settings) -> ExportSettings:
    return ExportSettings(
        expiry=timedelta(hours=settings.export_expiry_hours),
        file_resources=settings.export_file_resources,
        sweep_interval=settings.export_sweep_interval_seconds,
    )


def ice_config(settings: Settings) -> IceConfig:
    """The STUN/TURN servers of video visits (docs/visits.md)."""
    secret = settings.visit_turn_secret
    return IceConfig(
        stun_urls=tuple(settings.visit_stun_urls),
        turn_urls=tuple(settings.visit_turn_urls),
        turn_secret=None if secret is None else secret.get_secret_value(),
        turn_ttl=timedelta(seconds=settings.visit_turn_ttl_seconds),
    )


def device_ca_dir(settings: Settings) -> Path:
    """Where the device CA lives: MEDMESH_DEVICE_CA_DIR, else device-ca/ beside the keyring."""
    if settings.device_ca_dir is not None:
        return settings.device_ca_dir
    keyring = settings.master_key_file or default_key_paths(settings.database_url)[0]
    return keyring.parent / "device-ca"


def device_crl_file(settings: Settings) -> Path:
    """Where the device CA's CRL is published (Mosquitto's crlfile)."""
    return settings.device_crl_file or device_ca_dir(settings) / CRL
