"""The SQL schema, one place. Alembic migrations under `migrations/` must match it."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from medmesh.store.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

patients = Table(
    "patients",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("identifier_system", String(200), nullable=False),
    Column("identifier_value", String(100), nullable=False),
    Column("family", String(100), nullable=False),
    Column("given", String(100), nullable=False),
    Column("birth_date", Date, nullable=True),
    Column("gender", String(10), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("identifier_system", "identifier_value"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("manufacturer", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("serial_number", String(100), nullable=True),
    # SHA-256 of the device's high-entropy secret; the secret itself is shown once and not kept.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

device_status = Table(
    "device_status",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id"), primary_key=True),
    # When the platform last heard from the device, on any channel.
    Column("last_seen", UTCDateTime, nullable=False),
    # As the device last reported them (status topic, or its MQTT last will for `online`).
    Column("online", Boolean, nullable=True),
    Column("battery_percent", Float, nullable=True),
    Column("firmware", String(64), nullable=True),
    Column("reported_at", UTCDateTime, nullable=True),
)

device_assignments = Table(
    "device_assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(36), ForeignKey("devices.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=True),
    Index(None, "device_id", "start"),
    Index(None, "patient_id"),
)

observations = Table(
    "observations",
    metadata,
    # uuid5 of (device, message id): a redelivered message maps onto the stored row.
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("device_id", String(36), ForeignKey("devices.id"), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("code", String(16), nullable=False),
    Column("effective", UTCDateTime, nullable=False),
    # NULL for panels (blood pressure), whose values are in observation_components.
    Column("value", Float, nullable=True),
    Column("unit", String(16), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("device_id", "message_id"),
    Index(None, "patient_id", "code", "effective"),
    Index(None, "patient_id", "effective"),
)

observation_components = Table(
    "observation_components",
    metadata,
    Column(
        "observation_id",
        String(36),
        ForeignKey("observations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code", String(16), primary_key=True),
    Column("value", Float, nullable=False),
    Column("unit", String(16), nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("device_id", String(36), nullable=True),
    Column("message_id", String(128), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("detail", String(500), nullable=False),
    # The refused input as received (health data: kept for reprocessing, never logged). Bytes,
    # because refused input may hold anything, NUL included, which PostgreSQL text refuses.
    Column("payload", LargeBinary, nullable=False),
    Index(None, "device_id", "received_at"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)
