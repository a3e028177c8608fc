"""The SQL schema, one place. Alembic migrations under `migrations/` must match it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
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

# Health data columns (names, birth dates, identifiers, values, alert details) hold AES-256-GCM
# ciphertext under the patient's data key (crypto/envelope.py), bound to their column, patient
# and row; the keys live outside this database (crypto/keystore.py).
patients = Table(
    "patients",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("identifier_system", String(200), nullable=False),
    Column("identifier_value", LargeBinary, nullable=False),  # sealed
    # HMAC-SHA256 of (system, value) under the platform's blind index key: finds a patient by
    # identifier (HL7 PID, FHIR search) without storing the identifier in the clear.
    Column("identifier_index", String(64), nullable=False),
    Column("family", LargeBinary, nullable=False),  # sealed
    Column("given", LargeBinary, nullable=False),  # sealed
    Column("birth_date", LargeBinary, nullable=True),  # sealed ISO date
    Column("gender", String(10), nullable=True),
    Column("address", LargeBinary, nullable=True),  # sealed JSON (HL7 PID-11)
    Column("phone", LargeBinary, nullable=True),  # sealed (HL7 PID-13)
    # Set when this record was merged into another (HL7 A40): its data lives on that one.
    Column("merged_into", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # The organisation that manages the patient's record (its clinicians form care teams).
    Column("organization_id", String(36), nullable=False, server_default="default"),
    # A legal hold stops erasure until it is lifted (litigation, investigation).
    Column("legal_hold", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("identifier_index"),
)

# A patient's other identifiers (HL7 PID-3 repetitions beyond the one in `patients`), each
# found by its blind index as the patient's own is; the value sealed with the patient's key.
patient_identifiers = Table(
    "patient_identifiers",
    metadata,
    Column("identifier_index", String(64), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False, index=True),
    Column("system", String(200), nullable=False),
    Column("value", LargeBinary, nullable=False),  # sealed
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("manufacturer", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("serial_number", String(100), nullable=True),
    # Over HL7, the patient comes from PID (docs/hl7.md#the-patient); otherwise from assignment.
    Column("shared_monitor", Boolean, nullable=False, server_default=false()),
    Column("type", String(200), nullable=True),  # system|code (Device.type)
    # SHA-256 of the device's high-entropy secret; the secret itself is shown once and not kept.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Client certificates issued by the device CA (docs/device-certificates.md): what was issued to
# whom, until when, and when it was revoked; the CRL is made from the revoked rows.
device_certificates = Table(
    "device_certificates",
    metadata,
    Column("serial", String(40), primary_key=True),  # hex, lower case
    Column("device_id", String(36), ForeignKey("devices.id"), nullable=False, index=True),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# A device's Ed25519 public key for signed readings (docs/signed-payloads.md); a table of its
# own so that devices without one carry nothing.
device_signing_keys = Table(
    "device_signing_keys",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id"), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),  # raw 32 bytes
    Column("key_id", String(16), nullable=False),  # first 16 hex digits of its SHA-256
    # Whether this device's readings must be signed (besides MEDMESH_REQUIRE_SIGNED_READINGS).
    Column("required", Boolean, nullable=False, server_default=false()),
    Column("set_at", UTCDateTime, nullable=False),
)

# Nonces of signed readings seen within the replay window, shared by every process.
signature_nonces = Table(
    "signature_nonces",
    metadata,
    Column("device_id", String(36), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
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

# On PostgreSQL partitioned by month (migration 0021), with (id, effective) its primary and
# dedupe key and no foreign keys (migration 0028: ingest checks the owners once a batch,
# store/observation_owners.py); SQLite keeps the table as declared here.
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
    # Sealed float; NULL for panels (blood pressure), whose values are in
    # observation_components.
    Column("value", LargeBinary, nullable=True),
    Column("unit", String(16), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("device_id", "message_id"),
    Index(None, "patient_id", "code", "effective"),
    Index(None, "patient_id", "effective"),
)

# PostgreSQL: each connection's own temporary table that ingest COPYs a batch holding stored
# readings into before moving the new ones into observations (store/observations.py `_copy_new`:
# a batch of new readings only is COPYed straight in); created when the connection opens
# (store/database.py), emptied at every commit. Not in `metadata`: migrations never see it.
staging_metadata = MetaData()
observations_staging = Table(
    "observations_staging",
    staging_metadata,
    *(Column(c.name, c.type) for c in observations.columns),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)

# Committed batches whose after-commit work (alert rules, the readings event) has not finished:
# a process that dies between the commit and that work leaves the row, and a running process
# takes it up (ingest/after_commit.py). Observation ids only: no values.
pending_evaluations = Table(
    "pending_evaluations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("observation_ids", Text, nullable=False),  # JSON array
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Index(None, "created_at"),
)

# Which patients a pending batch holds, and their readings in it: the rules read what other
# batches committed for a patient and not judged yet (rules/engine.py), as judging from the
# stored history did.
pending_evaluation_patients = Table(
    "pending_evaluation_patients",
    metadata,
    Column(
        "pending_id",
        String(36),
        ForeignKey("pending_evaluations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    Column("observation_ids", Text, nullable=False),  # JSON array
    Index(None, "patient_id"),
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
    Column("value", LargeBinary, nullable=False),  # sealed float
    Column("unit", String(16), nullable=False),
)

# What a laboratory reports with a result (HL7 OBX-7 reference range, OBX-8 interpretation),
# sealed with the patient's key; deleted with the observation.
lab_result_details = Table(
    "lab_result_details",
    metadata,
    Column(
        "observation_id",
        String(36),
        ForeignKey("observations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("detail", LargeBinary, nullable=False),  # sealed JSON
)

# Merges of two patient records (HL7 ADT A40) and what each moved, so it can be undone.
# Ids only: no health data.
patient_merges = Table(
    "patient_merges",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("survivor_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("merged_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("merged_at", UTCDateTime, nullable=False),
    Column("merged_by", String(200), nullable=False),
    Column("undone_at", UTCDateTime, nullable=True),
    Column("moved", Text, nullable=False),  # JSON: observation, assignment and consent ids
)

# Per-minute and per-hour statistics of each quantity of a patient's readings, kept at ingest
# (store/rollups.py) so long charts read a row an hour, not every reading.
observation_rollups = Table(
    "observation_rollups",
    metadata,
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    Column("code", String(16), primary_key=True),
    Column("component", String(16), primary_key=True),  # "" for single-valued observations
    Column("resolution", Integer, primary_key=True),  # seconds: 60 or 3600
    Column("bucket", BigInteger, primary_key=True),  # the bucket's start, epoch seconds
    Column("stats", LargeBinary, nullable=False),  # sealed: count, sums, low, high
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
    # The refused input as received (health data: kept for reprocessing, never logged), sealed
    # with the platform's dead-letter key (its sender may have no patient yet).
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
    # Whose token it is: a user account, or an OAuth client (SMART Backend Services).
    Column("user_id", String(36), nullable=True),
    Column("client_id", String(36), nullable=True),
    Column("organization_id", String(36), nullable=False, server_default="default"),
    # SMART scopes granted, space-separated (e.g. "patient/Observation.rs").
    Column("scopes", Text, nullable=False, server_default=""),
    # SMART launch context of patient-facing tokens: the patient whose record it opens.
    Column("patient_id", String(36), nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
)

# --- access: accounts, care teams, consent, break-glass, audit, OAuth clients ----------------

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("organization_id", String(36), ForeignKey("organizations.id"), nullable=False),
    Column("username", String(100), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(32), nullable=False),  # patient, clinician, org-admin
    # The patient record a patient account belongs to; NULL for staff.
    Column("patient_id", String(36), nullable=True),
    Column("password_hash", String(200), nullable=False),  # argon2id, PHC string
    # Sealed with the accounts' service key (docs/accounts.md); NULL until enrolled.
    Column("totp_secret_sealed", LargeBinary, nullable=True),
    Column("totp_last_step", Integer, nullable=True),  # refuses a replayed code
    Column("failed_logins", Integer, nullable=False, server_default=false()),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    # Raised by sign-out, password reset, disablement and lockout: a session made under an
    # earlier value has ended (web/session.py).
    Column("session_epoch", Integer, nullable=False, server_default=text("0")),
)

care_team_members = Table(
    "care_team_members",
    metadata,
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("role", String(64), nullable=False),  # e.g. primary, nurse, escalation
    Column("added_at", UTCDateTime, nullable=False),
    Column("added_by", String(200), nullable=False),
    Index(None, "user_id"),
)

consents = Table(
    "consents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("status", String(16), nullable=False),  # active, inactive (revoked)
    Column("grantee_type", String(16), nullable=False),  # Practitioner (a user), Organization
    Column("grantee_id", String(36), nullable=False),
    # JSON lists; empty: any. Categories are observation-category codes (vital-signs, …),
    # purposes v3 PurposeOfUse codes (TREAT, HRESCH, …).
    Column("categories", Text, nullable=False),
    Column("purposes", Text, nullable=False),
    Column("period_start", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index(None, "patient_id", "status"),
    Index(None, "grantee_id", "status"),
)

break_glass = Table(
    "break_glass",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "user_id", "patient_id"),
)

# Append-only and hash-chained: each row's hash covers its fields and the previous row's hash;
# `seq` is assigned without gaps under a lock, so a deleted row shows as a gap.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False, unique=True),
    Column("recorded", UTCDateTime, nullable=False),
    Column("action", String(1), nullable=False),  # FHIR AuditEvent.action: C R U D E
    Column("subtype", String(32), nullable=False),  # read, search, export, erase, …
    Column("outcome", String(2), nullable=False),  # 0 success, 4 refused, 8 failed
    Column("actor_kind", String(16), nullable=False),  # user, client, device, cli
    Column("actor_id", String(100), nullable=False),
    Column("actor_name", String(200), nullable=False),
    Column("organization_id", String(36), nullable=True),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(100), nullable=True),
    Column("patient_id", String(36), nullable=True),  # no FK: audit outlives erasure
    Column("purpose", String(16), nullable=True),
    Column("basis", String(100), nullable=True),  # self, care-team, consent:<id>, break-glass:<id>
    Column("source", String(100), nullable=True),  # the caller's network address
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "patient_id", "recorded"),
)

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("id", String(100), primary_key=True),  # the client_id
    Column("organization_id", String(36), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("jwks", Text, nullable=False),  # public keys verifying its assertions (JWK Set)
    Column("scopes", Text, nullable=False),  # the most it may ask for, space-separated
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    # backend (SMART Backend Services) or public (a browser app, SMART App Launch with PKCE)
    Column("kind", String(16), nullable=False, server_default="backend"),
    Column("redirect_uris", Text, nullable=False, server_default="[]"),  # JSON list, exact
    Column("origins", Text, nullable=False, server_default="[]"),  # JSON list, for CORS
)

# SMART App Launch: an authorization request waiting for the person's sign-in and consent.
oauth_authorization_requests = Table(
    "oauth_authorization_requests",
    metadata,
    Column("id", String(64), primary_key=True),  # random; names the request in the consent URL
    Column("client_id", String(100), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("state", String(500), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", String(500), nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Authorization codes (hashed), single use, bound to client, redirect URI and PKCE challenge.
oauth_authorization_codes = Table(
    "oauth_authorization_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(36), nullable=False),  # the tokens issued from it share it
    Column("client_id", String(100), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", Text, nullable=False),  # granted, identity scopes included
    Column("code_challenge", String(128), nullable=False),
    Column("patient_id", String(36), nullable=True),  # the launch patient chosen
    Column("nonce", String(500), nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("access_token_id", String(36), nullable=True),
)

# Refresh tokens (hashed), rotated on each use; reuse of a rotated one revokes its grant.
oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(36), nullable=False, index=True),
    Column("client_id", String(100), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient_id", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("access_token_id", String(36), nullable=True),
)

# Client assertions already used (jti), kept until they expire: a replayed one is refused.
oauth_assertions = Table(
    "oauth_assertions",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
)

# --- encryption at rest, export, erasure -------------------------------------------------------

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_id", String(36), nullable=False),  # the requester; only they may fetch it
    Column("request", String(2000), nullable=False),  # the kick-off URL, for the manifest
    Column("kind", String(16), nullable=False),  # patient, group, system
    Column("patient_ids", Text, nullable=False),  # JSON list, fixed at kick-off
    Column("types", Text, nullable=False),  # JSON list of resource types
    Column("since", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=False),  # queued, running, complete, failed, cancelled
    Column("error", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
)

export_files = Table(
    "export_files",
    metadata,
    Column(
        "job_id", String(36), ForeignKey("export_jobs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("name", String(100), primary_key=True),  # e.g. Observation-1.ndjson
    Column("resource_type", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    # NDJSON, encrypted (AES-256-GCM) with a key of the job's own, wrapped by the master key.
    Column("data", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("master_key_id", String(64), nullable=False),
)

erasure_certificates = Table(
    "erasure_certificates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), nullable=False),  # the erased record's id, nothing else
    Column("issued_at", UTCDateTime, nullable=False),
    Column("document", Text, nullable=False),  # canonical JSON of what was destroyed
    Column("signature", String(200), nullable=False),  # Ed25519 over the document, base64
)

# --- remote monitoring (alerts, care plans, webhooks) ------------------------------------------

care_plans = Table(
    "care_plans",
    metadata,
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    # Thresholds and reading schedule that override the clinical defaults (rules/defaults.py),
    # as JSON: only what differs from the defaults is stored.
    Column("thresholds", Text, nullable=False),
    Column("schedule", Text, nullable=False),
    # Who is notified first and who an unacknowledged urgent alert escalates to.
    Column("primary_clinician", String(200), nullable=True),
    Column("escalation_clinician", String(200), nullable=True),  # free text, before chains
    # The escalation chain (paging/chain.py) as JSON; NULL: the default chain.
    Column("escalation_chain", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(200), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("rule", String(64), nullable=False),  # e.g. spo2-low, news2, device-stale
    # Same rule, same patient (and device, for device rules): at most one alert not resolved.
    Column("dedupe_key", String(200), nullable=False),
    Column("severity", String(16), nullable=False),  # info, warning, urgent, critical
    Column("status", String(16), nullable=False),  # open, acknowledged, resolved
    Column("title", String(200), nullable=False),
    Column("detail", LargeBinary, nullable=False),  # sealed: it quotes values
    Column("device_id", String(36), nullable=True),
    Column("observation_id", String(36), nullable=True),  # the reading that raised it
    Column("opened_at", UTCDateTime, nullable=False),
    Column("last_triggered_at", UTCDateTime, nullable=False),
    Column("trigger_count", Integer, nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Column("resolution", String(200), nullable=True),  # e.g. "value back in range", a note
    Column("escalation_level", Integer, nullable=False),
    Column("escalated_at", UTCDateTime, nullable=True),
    Index(None, "patient_id", "status"),
    Index(None, "dedupe_key", "status"),
    Index(None, "status", "severity", "opened_at"),
)

# Per patient, what the alert rules need from recent readings (the readings inside the rules'
# window), so a batch updates it instead of re-reading the window (rules/state.py). Sealed with
# the patient's key; `version` moves on every write, so a process may keep a decoded copy and
# skip reading `state` while the version it holds is current.
rule_states = Table(
    "rule_states",
    metadata,
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),  # sealed
    Column("updated_at", UTCDateTime, nullable=False),
)

# The readings of a rule state, by minute of reading time: a batch appends one segment a
# minute it touches, a closed minute is compacted into one, minutes behind the state's horizon
# are deleted (rules/state.py). `version` is the state's version that wrote the segment, so a
# process holding an older copy reads only what was written since. Sealed with the patient's
# key.
rule_state_segments = Table(
    "rule_state_segments",
    metadata,
    Column("patient_id", String(36), ForeignKey("patients.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("bucket", UTCDateTime, primary_key=True),
    Column("state", LargeBinary, nullable=False),  # sealed
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("criteria", String(500), nullable=False),  # e.g. Flag?patient=…, Observation?code=…
    Column("endpoint", String(2000), nullable=False),  # https URL (rest-hook)
    # Key for the HMAC-SHA256 signature of each payload; kept to sign, shown once on creation.
    Column("signing_secret", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # requested, active, error, off
    Column("resource", Text, nullable=False),  # the FHIR Subscription as submitted
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("last_error", String(500), nullable=True),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", String(36), ForeignKey("subscriptions.id"), nullable=False),
    Column("event_id", String(36), nullable=False),
    # The patient the event concerns, whose key seals the payload (erasure deletes by it).
    Column("patient_id", String(36), nullable=True, index=True),
    Column("payload", LargeBinary, nullable=False),  # sealed (docs/webhooks.md#at-rest)
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    UniqueConstraint("subscription_id", "event_id"),
    Index(None, "status", "next_attempt_at"),
)

# --- care between visits (secure messages) -------------------------------------------------

message_threads = Table(
    "message_threads",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("subject", LargeBinary, nullable=False),  # sealed
    Column("category", String(32), nullable=False),  # general, medication, appointment, results
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(36), nullable=False),
    Column("last_message_at", UTCDateTime, nullable=False),
    Index(None, "patient_id", "last_message_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("thread_id", String(36), ForeignKey("message_threads.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("side", String(16), nullable=False),  # patient, care-team
    Column("sender_id", String(36), nullable=False),
    Column("sender_name", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),  # sealed
    Column("sent_at", UTCDateTime, nullable=False),
    Column("read_at", UTCDateTime, nullable=True),  # when the other side first opened it
    Index(None, "thread_id", "sent_at"),
    Index(None, "patient_id", "sent_at"),
    Index(None, "patient_id", "side", "read_at"),
)

message_attachments = Table(
    "message_attachments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("message_id", String(36), ForeignKey("messages.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("content_type", String(64), nullable=False),  # sniffed from the bytes
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),  # sealed; images re-encoded first
    Index(None, "message_id"),
    Index(None, "patient_id"),
)

# --- care between visits (medications and refill requests) ----------------------------------

medications = Table(
    "medications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    # Sealed JSON: name, RxNorm code, dosage text (what is taken says what one has).
    Column("detail", LargeBinary, nullable=False),
    Column("refills", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active, stopped, completed
    Column("requester_id", String(36), nullable=False),
    Column("requester_name", String(200), nullable=False),
    Column("authored_at", UTCDateTime, nullable=False),
    Column("prior_id", String(36), nullable=True),  # the MedicationRequest this one renews
    Column("status_changed_at", UTCDateTime, nullable=True),
    Index(None, "patient_id", "status"),
)

refill_requests = Table(
    "refill_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("medication_id", String(36), ForeignKey("medications.id"), nullable=False),
    Column("status", String(16), nullable=False),  # open, approved, denied, visit-requested
    Column("note", LargeBinary, nullable=True),  # sealed: the patient's
    Column("requested_at", UTCDateTime, nullable=False),
    Column("requested_by", String(36), nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decided_by", String(36), nullable=True),
    Column("decided_by_name", String(200), nullable=True),
    Column("reason", LargeBinary, nullable=True),  # sealed: the care team's, for the patient
    Column("renewal_id", String(36), nullable=True),
    Index(None, "status", "requested_at"),
    Index(None, "patient_id"),
    # At most one open request per medication, even for two requests at the same moment.
    Index(
        "ix_refill_requests_one_open",
        "medication_id",
        unique=True,
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
)

# --- care between visits (appointments) -----------------------------------------------------

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("clinician_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("timezone", String(64), nullable=False),  # IANA; the weekly hours are in it
    Column("slot_minutes", Integer, nullable=False),
    Column("kinds", String(64), nullable=False),  # comma-separated: in-person, video
    Column("hours", Text, nullable=False),  # JSON: [{"weekday": 0, "start": "09:00", "end": …}]
    Column("book_ahead_days", Integer, nullable=False),
    Column("cancel_hours", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("clinician_id"),
)

schedule_exceptions = Table(
    "schedule_exceptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("schedule_id", String(36), ForeignKey("schedules.id"), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Index(None, "schedule_id", "start"),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("schedule_id", String(36), ForeignKey("schedules.id"), nullable=False),
    Column("clinician_id", String(36), nullable=False),
    Column("clinician_name", String(200), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False),  # in-person, video
    Column("status", String(16), nullable=False),  # booked, cancelled
    Column("reason", LargeBinary, nullable=True),  # sealed: the patient's words
    Column("booked_at", UTCDateTime, nullable=False),
    Column("booked_by", String(36), nullable=False),
    Column("cancelled_at", UTCDateTime, nullable=True),
    Column("cancelled_by", String(36), nullable=True),
    Index(None, "patient_id", "start"),
    Index(None, "clinician_id", "start"),
    # No double booking: one booked appointment per clinician and start time, enforced by the
    # database, so two requests at the same moment cannot both take a slot.
    Index(
        "ix_appointments_one_booking",
        "clinician_id",
        "start",
        unique=True,
        sqlite_where=text("status = 'booked'"),
        postgresql_where=text("status = 'booked'"),
    ),
)

# --- care between visits (notifications outside the app) ------------------------------------

notification_preferences = Table(
    "notification_preferences",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("email", String(320), nullable=True),
    Column("email_enabled", Boolean, nullable=False),
    Column("quiet_start", String(5), nullable=True),  # HH:MM local
    Column("quiet_end", String(5), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# What to tell whom, and when: the kind only (never what happened), so a row holds no health
# data; `about` names the appointment a reminder is for (cancelled with it).
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("about", String(36), nullable=True),
    Column("status", String(16), nullable=False),  # pending, sent, failed
    Column("due_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(200), nullable=True),
    Index(None, "status", "due_at"),
    Index(None, "user_id", "kind", "status"),
)

# --- imaging (DICOM studies) ------------------------------------------------------------------
# UIDs, modality, dates and slice positions are clear for search and ordering; names, birth
# dates and descriptions (which say what was examined) and every file are sealed with the
# patient's key (docs/imaging.md).

imaging_studies = Table(
    "imaging_studies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("modalities", String(128), nullable=False),  # space-separated, as received
    Column("detail", LargeBinary, nullable=False),  # sealed JSON: description, accession, ...
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "patient_id", "started_at"),
)

imaging_series = Table(
    "imaging_series",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("study_id", String(36), ForeignKey("imaging_studies.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("series_uid", String(64), nullable=False, unique=True),
    Column("modality", String(16), nullable=False),
    Column("number", Integer, nullable=True),
    Column("detail", LargeBinary, nullable=False),  # sealed JSON: description, body part
    Index(None, "study_id"),
    Index(None, "patient_id"),
)

imaging_instances = Table(
    "imaging_instances",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("series_id", String(36), ForeignKey("imaging_series.id"), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("number", Integer, nullable=True),
    Column("slice_position", Float, nullable=True),
    Column("frames", Integer, nullable=False),
    Column("transfer_syntax", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("content", LargeBinary, nullable=False),  # the Part 10 file, sealed
    Index(None, "series_id"),
    Index(None, "patient_id"),
)

# Instances no single patient matched: sealed with a key of their own ("quarantine:<id>"),
# destroyed when an org admin rejects them; moved (re-sealed) when assigned.
imaging_quarantine = Table(
    "imaging_quarantine",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),  # waiting, assigned, rejected
    Column("reason", String(200), nullable=False),
    Column("source", String(80), nullable=False),  # calling AE title and address, or "stow"
    Column("received_at", UTCDateTime, nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("modality", String(16), nullable=False),
    Column("content", LargeBinary, nullable=True),  # sealed file; NULL once assigned/rejected
    Column("decided_by", String(36), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Index(None, "status", "received_at"),
)

# Video visits (care/visits.py): one row per video appointment once someone joined; the
# clinician's note is sealed with the patient's key.
visits = Table(
    "visits",
    metadata,
    Column("appointment_id", String(36), ForeignKey("appointments.id"), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("clinician_id", String(36), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),  # the first join
    Column("admitted_at", UTCDateTime, nullable=True),  # the clinician let the patient in
    Column("ended_at", UTCDateTime, nullable=True),  # the last leave
    Column("note", LargeBinary, nullable=True),  # sealed
    Column("note_updated_at", UTCDateTime, nullable=True),
    Column("chat_thread_id", String(36), nullable=True),  # the visit's chat, in messages
    Index(None, "patient_id", "started_at"),
)

# Clinician time on a patient's care (care/time_entries.py): visits, interactive work, manual
# entries (reason sealed), set-up and education. Edits keep the earlier version in
# time_entry_revisions (sealed), so the trail survives while the patient's data does.
time_entries = Table(
    "time_entries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("clinician_id", String(36), nullable=False),
    Column("clinician_name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # visit, interactive, manual, setup
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Column("interactive", Boolean, nullable=False),  # real-time interactive communication
    Column("reason", LargeBinary, nullable=True),  # sealed
    Column("source_id", String(36), nullable=True),  # the visit's appointment id
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(36), nullable=False),
    Index(None, "patient_id", "start"),
    Index(None, "clinician_id", "start"),
)

time_entry_revisions = Table(
    "time_entry_revisions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("entry_id", String(36), nullable=False),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("changed_by", String(36), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("before", LargeBinary, nullable=False),  # sealed JSON of the earlier version
    Index(None, "entry_id", "changed_at"),
)

# Caregivers (care/caregivers.py, docs/paging.md#caregivers): a patient's single-use
# invitations (the code only as its SHA-256 hash) and the caregivers who accepted one, each
# with the consent naming them (RelatedPerson) and the severities they are paged for.
caregiver_invitations = Table(
    "caregiver_invitations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("categories", Text, nullable=False),  # JSON list; empty: every category
    Column("alert_types", Text, nullable=False),  # JSON list of severities paged
    Column("created_by", String(36), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Index(None, "patient_id"),
)

caregivers = Table(
    "caregivers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("consent_id", String(36), ForeignKey("consents.id"), nullable=False),
    Column("alert_types", Text, nullable=False),  # JSON list of severities paged
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index(None, "patient_id"),
    Index(None, "user_id"),
)


# Paging (medmesh.paging, docs/paging.md). Channels and pages name people and counts, never a
# patient or a value; `page_alerts` links a page to the alerts it announces (and so to their
# patients, for erasure); the snooze reason is sealed with the patient's key.
paging_channels = Table(
    "paging_channels",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("position", Integer, nullable=False),  # tried in this order, lowest first
    Column("kind", String(16), nullable=False),  # email, apprise
    Column("target", String(2000), nullable=False),  # an address or an apprise URL
    Column("label", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "user_id", "position"),
)

pages = Table(
    "pages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("level", Integer, nullable=False),  # the step of the escalation chain
    Column("severity", String(16), nullable=False),  # the highest of its alerts
    Column("status", String(16), nullable=False),  # held, sent, failed, acknowledged, escalated
    Column("due_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("escalate_at", UTCDateTime, nullable=True),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("acknowledged_by", String(36), nullable=True),
    Column("acknowledged_via", String(16), nullable=True),  # the channel kind of the link
    Index(None, "status", "due_at"),
    Index(None, "recipient_id", "status"),
)

page_alerts = Table(
    "page_alerts",
    metadata,
    Column("page_id", String(36), ForeignKey("pages.id"), primary_key=True),
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Index(None, "alert_id"),
    Index(None, "patient_id"),
)

page_deliveries = Table(
    "page_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("page_id", String(36), ForeignKey("pages.id"), nullable=False),
    Column("channel_id", String(36), nullable=True),
    Column("channel_kind", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),  # sent, failed
    Column("error", String(200), nullable=True),  # an exception's type name, never its text
    Column("attempted_at", UTCDateTime, nullable=False),
    # The link's code, hashed (SHA-256): it opens the page after sign-in, once, until expiry.
    Column("code_hash", String(64), nullable=True, unique=True),
    Column("code_expires_at", UTCDateTime, nullable=True),
    Column("code_used_at", UTCDateTime, nullable=True),
    Index(None, "page_id"),
)

alert_snoozes = Table(
    "alert_snoozes",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("patient_id", String(36), ForeignKey("patients.id"), nullable=False),
    Column("until", UTCDateTime, nullable=False),
    Column("severity", String(16), nullable=False),  # re-fires only above this
    Column("reason", LargeBinary, nullable=False),  # sealed
    Column("snoozed_by", String(36), nullable=False),
    Column("snoozed_at", UTCDateTime, nullable=False),
    Index(None, "patient_id"),
)

# On-call rosters: teams of an organisation, and who covers when.
oncall_teams = Table(
    "oncall_teams",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("organization_id", String(36), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("lead_id", String(36), ForeignKey("users.id"), nullable=True),
    Column("fallback_id", String(36), ForeignKey("users.id"), nullable=True),  # covers gaps
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(36), nullable=False),
    UniqueConstraint("organization_id", "name"),
)

oncall_shifts = Table(
    "oncall_shifts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("oncall_teams.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # weekly, override
    # weekly: a weekday (0 Monday) and local start and end (HH:MM, end <= start: next day)
    Column("weekday", Integer, nullable=True),
    Column("start_time", String(5), nullable=True),
    Column("end_time", String(5), nullable=True),
    # override: an instant range; it wins over the weekly rotation
    Column("starts_at", UTCDateTime, nullable=True),
    Column("ends_at", UTCDateTime, nullable=True),
    Index(None, "team_id"),
)
