"""Settings of a medmesh deployment, read from MEDMESH_* environment variables (or .env)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume reachable


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDMESH_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./medmesh.db",
        description="sqlite:///path.db (embedded default) or postgresql://user@host/db",
    )
    master_key_file: Path | None = Field(
        None,
        description="The master keyring (JSON, mode 0600, created on first start if missing); "
        "unset: next to the SQLite database file (docs/encryption.md)",
    )
    key_store_path: Path | None = Field(
        None,
        description="SQLite file of the per-patient data keys, kept OUT of the main database and "
        "its backups so erasure destroys them; unset: next to the SQLite database file",
    )
    erasure_retention_days: int = Field(
        0,
        ge=0,
        description="Refuse to erase a patient with clinical data younger than this many days "
        "(medical-records retention law); 0: no minimum (docs/erasure.md)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="The URL clients reach this server at (scheme, host, port; no trailing "
        "path); the OAuth token endpoint is <this>/oauth/token, the exact `aud` of client "
        "assertions",
    )
    auto_migrate: bool = Field(True, description="Apply database migrations at start-up")
    max_clock_skew_seconds: int = Field(
        300, description="How far ahead of the server clock a reading's time may be"
    )
    require_signed_readings: bool = Field(
        False,
        description="Every device must sign its readings (the organisation's policy); "
        "otherwise only devices marked with `medmesh device require-signature` must "
        "(docs/signed-payloads.md)",
    )
    signature_max_skew_seconds: int = Field(
        300,
        ge=1,
        le=86_400,
        description="How far a signed reading's signing time may be from the server clock, "
        "either way; its nonce is remembered as long",
    )
    reassignment_backfill_hours: float = Field(
        24.0,
        ge=0,
        description="Readings of a device's previous patient are accepted up to this long "
        "before the device's last assignment change; older ones are refused with "
        "before-reassignment (docs/readings.md)",
    )
    group_commit_ms: float = Field(
        2,
        ge=0,
        le=100,
        description="Group commit: ingest calls (HTTP requests, MQTT rounds, MLLP messages) "
        "arriving within this many milliseconds of the first share one transaction; each "
        "sender is still answered only after its own readings are committed. 0: off "
        "(docs/configuration.md)",
    )
    max_batch_readings: int = 1000
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest device batch (POST /ingest/...), in bytes"
    )
    max_request_body_bytes: int = Field(
        262_144,
        gt=0,
        description="Largest request body of every other route, in bytes (docs/security.md)",
    )
    message_attachment_max_bytes: int = Field(
        5 * 1024 * 1024, gt=0, description="Largest attachment to a secure message, in bytes"
    )
    message_max_attachments: int = Field(
        4, ge=0, le=20, description="Most attachments one secure message may carry"
    )
    smtp_host: str | None = Field(
        None, description="SMTP server for email notifications (docs/care.md); unset: none sent"
    )
    smtp_port: int = Field(587, gt=0, lt=65536)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS")
    smtp_from: str = Field("medmesh <no-reply@localhost>", description="From address of emails")
    notify_reminder_hours: float = Field(
        24, gt=0, description="How long before an appointment its reminder is sent"
    )
    notify_poll_seconds: float = Field(5, gt=0, description="How often due emails are sent")
    paging_enabled: bool = Field(True, description="Run the pager (docs/paging.md)")
    paging_hold_seconds: float = Field(
        5, ge=0, le=300, description="How long a new page waits for other alerts to join it"
    )
    paging_poll_seconds: float = Field(1, gt=0, description="How often due pages are sent")
    paging_max_per_alert: int = Field(3, ge=1, le=20, description="Most pages one alert causes")
    max_url_bytes: int = Field(8192, gt=0, description="Longest path and query string")
    max_request_headers: int = Field(100, gt=0, description="Most headers one request may have")

    rate_limit_enabled: bool = Field(
        True, description="Limit requests per client (docs/security.md); off: benchmarks only"
    )
    rate_limit_device_per_minute: float = Field(
        600, gt=0, description="Requests a device may send per minute, on average"
    )
    rate_limit_device_burst: int = Field(300, ge=1, description="…and at once after a pause")
    rate_limit_client_per_minute: float = Field(
        1200, gt=0, description="Requests per minute of an API token or dashboard session"
    )
    rate_limit_client_burst: int = Field(300, ge=1)
    rate_limit_anonymous_per_minute: float = Field(
        120,
        gt=0,
        description="Requests per minute from one address without an accepted credential",
    )
    rate_limit_anonymous_burst: int = Field(60, ge=1)
    templates_dir: Path | None = Field(
        None,
        description="Directory of vendor mapping templates (*.json), each accepted as the "
        "format template/<name>; a bad template stops start-up (docs/formats.md)",
    )

    event_bus: Literal["memory", "postgres"] = Field(
        "memory",
        description="memory: one process; postgres: LISTEN/NOTIFY between processes sharing "
        "a PostgreSQL database (ingest workers and API servers)",
    )

    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs dashboard session cookies; unset: a random key per process "
        "(sessions end on restart and are not shared between processes)",
    )
    oauth_signing_key_file: Path | None = Field(
        None,
        description="Private RSA key (JWK, mode 0600, created on first use if missing) that "
        "signs OpenID Connect id_tokens for SMART apps; unset: a random key per process",
    )
    session_https_only: bool | None = Field(
        None,
        description="Send the session cookie over HTTPS only (Secure); unset: on unless "
        "`medmesh serve` listens on a loopback address only",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed; empty: none, the peer address "
        "is the client's (docs/security.md)",
    )
    session_idle_minutes: int = Field(
        15, ge=1, description="Dashboard sessions end after this long without user activity"
    )

    break_glass_minutes: int = Field(
        60,
        ge=1,
        le=24 * 60,
        description="How long emergency (break-glass) access to a record lasts once opened",
    )
    signin_max_failures: int = Field(
        5, ge=1, description="Consecutive failed sign-ins (password or code) that lock an account"
    )
    signin_lockout_minutes: int = Field(
        15, ge=1, description="First lock of an account; each further lock lasts twice as long"
    )
    signin_address_max_failures: int = Field(
        20,
        ge=1,
        description="Failed sign-ins from one client address, across accounts, that "
        "turn the address away for the rest of the window",
    )
    signin_address_window_minutes: int = Field(
        15, ge=1, description="The window over which failures per address are counted"
    )

    after_commit_recover_seconds: float = Field(
        30.0,
        gt=0,
        description="Readings are acknowledged once stored and judged by the alert rules just "
        "after; a batch still unjudged this long after its commit (its process died) is judged "
        "by a running process",
    )
    after_commit_round_readings: int = Field(
        2000,
        ge=1,
        description="Committed readings judged by the alert rules together, in one "
        "transaction, at most (a round is at least one committed batch): smaller rounds "
        "shorten what a new reading waits behind under load; larger ones commit less often",
    )
    after_commit_urgent_first: bool = Field(
        True,
        description="Judge the patients of a committed reading that may raise an alert on its "
        "own (a glucose or blood pressure value beyond a one-reading level of the default "
        "thresholds) ahead of the readings queued before it (docs/configuration.md)",
    )
    alert_check_interval_seconds: float = Field(
        60.0,
        ge=0,
        description="How often stale devices, missed readings and unacknowledged urgent alerts "
        "are checked (docs/alerts.md); 0: never",
    )

    export_expiry_hours: float = Field(
        24.0, gt=0, description="Bulk export files are deleted this long after the export ends"
    )
    export_file_resources: int = Field(
        10_000, ge=1, description="Resources per bulk export NDJSON file at most"
    )
    export_runner: bool = Field(
        True,
        description="Run bulk export jobs in this process; with several API processes on one "
        "database, leave it on in exactly one (docs/export.md)",
    )
    export_sweep_interval_seconds: float = Field(
        600.0, gt=0, description="How often expired bulk exports are deleted"
    )

    redis_url: str | None = Field(
        None,
        description="Redis (redis://host:port/db) for rate-limit and sign-in lockout counters "
        "shared by every server process; unset: each process counts on its own",
    )
    device_ca_dir: Path | None = Field(
        None,
        description="Directory of the device CA (ca.crt, ca.key mode 0600, crl.pem) made by "
        "`medmesh ca init`; unset: device-ca/ beside the master keyring "
        "(docs/device-certificates.md)",
    )
    device_crl_file: Path | None = Field(
        None,
        description="Where `medmesh device revoke` publishes the device CA's CRL (Mosquitto's "
        "crlfile); unset: crl.pem in MEDMESH_DEVICE_CA_DIR",
    )
    device_certificate_days: int = Field(
        30,
        ge=1,
        le=825,
        description="Validity of a device certificate `medmesh device cert` issues",
    )
    mqtt_host: str | None = Field(None, description="MQTT broker host; unset: no MQTT ingest")
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_client_id: str = Field(
        "medmesh-ingest", description="Unique per ingest worker; keeps its broker session"
    )
    mqtt_shared_group: str | None = Field(
        "medmesh-ingest", description="MQTT 5 shared subscription group; empty: no sharing"
    )
    mqtt_ca_file: str | None = Field(None, description="CA bundle to verify the broker (TLS)")
    mqtt_cert_file: str | None = Field(None, description="Client certificate (mutual TLS)")
    mqtt_key_file: str | None = None

    mllp_port: int | None = Field(
        None, description="HL7 v2 MLLP listener port (e.g. 2575); unset: no MLLP listener"
    )
    mllp_host: str = "127.0.0.1"
    mllp_max_message_bytes: int = 1_048_576
    mllp_cert_file: str | None = Field(
        None, description="TLS certificate for MLLP; use TLS (or a VPN) outside loopback"
    )
    mllp_key_file: str | None = None
    mllp_client_ca_file: str | None = Field(
        None,
        description="CA certificate(s) (PEM) that issue MLLP senders' client certificates; "
        "set (with MEDMESH_MLLP_CERT_FILE): every sender must present one (mutual TLS)",
    )
    mllp_allowed_senders: Annotated[list[str], NoDecode] = Field(
        ["127.0.0.0/8", "::1/128"],
        description="Addresses or networks MLLP connections are accepted from, comma-separated "
        "(10.1.2.0/24,10.1.3.7); default loopback only; 0.0.0.0/0,::/0 for any",
    )
    mllp_idle_timeout_seconds: float = Field(
        300.0, gt=0, description="Close an MLLP connection with no message in progress this long"
    )
    mllp_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Close an MLLP connection whose message is not whole this long "
        "after its first byte (also the TLS handshake limit)",
    )
    mllp_max_connections: int = Field(100, ge=1, description="Open MLLP connections at most")
    mllp_max_connections_per_address: int = Field(
        10, ge=1, description="Open MLLP connections from one sender address at most"
    )
    mllp_max_buffered_bytes: int = Field(
        32 * 1_048_576,
        gt=0,
        description="Memory all partial MLLP messages together may hold; a connection whose "
        "next bytes would pass it is closed",
    )

    @field_validator("mllp_allowed_senders", mode="before")
    @classmethod
    def _split_senders(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @field_validator("mllp_allowed_senders")
    @classmethod
    def _check_senders(cls, value: list[str]) -> list[str]:
        for spec in value:
            try:
                ipaddress.ip_network(spec.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {spec.strip()[:64]!r}") from None
        return value

    dicom_port: int | None = Field(
        None, description="DICOM Storage SCP port (e.g. 11112); unset: no DICOM listener"
    )
    dicom_host: str = "127.0.0.1"
    dicom_ae_title: str = Field("MEDMESH", description="medmesh's own AE title (called AE)")
    dicom_allowed_aes: Annotated[list[str], NoDecode] = Field(
        [],
        description="Calling AE titles allowed to store and find, each with the address it "
        "connects from, comma-separated (CT1@10.1.2.7,MR_SUITE@10.1.2.8); empty: none",
    )
    dicom_max_instance_bytes: int = Field(
        256 * 1_048_576, gt=0, description="Largest DICOM instance accepted (bytes)"
    )
    dicom_max_associations: int = Field(10, ge=1, description="Open DICOM associations at most")
    dicom_cert_file: str | None = Field(
        None, description="TLS certificate for DICOM (DICOM TLS profile); unset: plain TCP"
    )
    dicom_key_file: str | None = None
    dicom_client_ca_file: str | None = Field(
        None, description="CA that issues modalities' client certificates; set: one is required"
    )

    @field_validator("dicom_allowed_aes", mode="before")
    @classmethod
    def _split_aes(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dicom_allowed_aes")
    @classmethod
    def _check_aes(cls, value: list[str]) -> list[str]:
        for spec in value:
            title, at, host = spec.partition("@")
            if not at or not title or not host or len(title) > 16:
                raise ValueError(f"not TITLE@address (title up to 16 characters): {spec[:64]!r}")
        return value

    webhook_ca_file: str | None = Field(
        None,
        description="CA certificate(s) (PEM) trusted, besides the system's, to verify webhook "
        "receivers: for receivers with certificates from a private CA",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest one webhook POST may take, connection included"
    )
    webhook_max_attempts: int = Field(
        6, ge=1, description="Attempts per webhook delivery before it is marked failed"
    )
    webhook_retry_seconds: list[float] = Field(
        [5.0, 30.0, 120.0, 600.0, 3600.0],
        min_length=1,
        description="Wait before each webhook retry (±20 % jitter); the last repeats",
    )

    # Video visits, clinician time and the RPM report (docs/visits.md, docs/rpm-report.md).
    visit_join_early_minutes: int = Field(
        15, ge=0, le=120, description="How long before its start a video visit may be joined"
    )
    visit_stun_urls: list[str] = Field(
        [], description="STUN servers offered to browsers, e.g. stun:turn.example.org:3478"
    )
    visit_turn_urls: list[str] = Field(
        [], description="TURN servers (coturn), e.g. turns:turn.example.org:5349"
    )
    visit_turn_secret: SecretStr | None = Field(
        None, description="coturn's static-auth-secret: medmesh mints time-limited credentials"
    )
    visit_turn_ttl_seconds: int = Field(
        3600, ge=60, le=86400, description="How long a minted TURN credential is valid"
    )
    time_idle_minutes: int = Field(
        5, ge=1, le=60, description="Interactive clinician time stops after this long idle"
    )
    rpm_codes_file: Path | None = Field(
        None, description="JSON of the RPM codes and thresholds; unset: CMS CY 2026 (built in)"
    )
    rpm_timezone: str = Field(
        "UTC", description="The clinic's time zone: the day a reading counts for in the report"
    )

    def bound_to(self, host: str) -> Settings:
        """These settings for a server listening on `host`: unless configured, the session
        cookie is Secure wherever the server can be reached from another machine."""
        if self.session_https_only is not None:
            return self
        return self.model_copy(update={"session_https_only": not is_loopback(host)})

    def proxy_options(self) -> dict[str, Any]:
        """uvicorn's options for X-Forwarded-* headers: off, always. The app believes them
        itself, from the trusted proxies only (http/forwarded.py), so that it also knows the
        address the connection came from (uvicorn alone would believe any loopback peer)."""
        return {"proxy_headers": False, "forwarded_allow_ips": ""}

    def proxies(self) -> list[str]:
        """MEDMESH_TRUSTED_PROXIES as a list."""
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]
