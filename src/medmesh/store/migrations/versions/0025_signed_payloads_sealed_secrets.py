"""signed payloads and sealed secrets: device signing keys, seen nonces; TOTP secrets and webhook
delivery payloads sealed

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 12:00:00

Devices may hold an Ed25519 public key (`device_signing_keys`) and the nonces of their signed
readings are kept for the replay window (`signature_nonces`); docs/signed-payloads.md.

Existing TOTP secrets are sealed with the accounts' service key and existing webhook delivery
payloads with the key of the patient they concern (docs/accounts.md, docs/webhooks.md). Both
need the key store: the migration uses the cipher that medmesh's Database attaches to its
connections (`medmesh db upgrade`, or start-up with auto-migrate), so run it through medmesh.
A delivery whose patient was erased (no key any more) is deleted.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.util import await_only

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_CIPHER = "medmesh.cipher"  # store/database.py: CIPHER
_ACCOUNTS_OWNER = "platform:accounts"  # store/users.py
_WEBHOOKS_OWNER = "platform:webhooks"  # store/webhook_deliveries.py


def _cipher() -> Any:
    cipher = op.get_bind().info.get(_CIPHER)
    if cipher is None:
        raise RuntimeError(
            "migration 0025 seals existing secrets and needs the key store: run it through "
            "medmesh (`medmesh db upgrade`), not bare alembic"
        )
    return cipher


def _seal_totp_secrets() -> None:
    op.add_column("users", sa.Column("totp_secret_sealed", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL")
    ).all()
    if rows:
        key = await_only(_cipher().key_or_create(_ACCOUNTS_OWNER))
        for user_id, secret in rows:
            sealed = key.seal(secret.encode("ascii"), "users.totp_secret_sealed", user_id)
            bind.execute(
                sa.text("UPDATE users SET totp_secret_sealed = :sealed WHERE id = :id"),
                {"sealed": sealed, "id": user_id},
            )
    op.drop_column("users", "totp_secret")


def _seal_webhook_payloads() -> None:
    op.add_column("webhook_deliveries", sa.Column("patient_id", sa.String(36), nullable=True))
    op.create_index("ix_webhook_deliveries_patient_id", "webhook_deliveries", ["patient_id"])
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, event_id, payload FROM webhook_deliveries")).all()
    if not rows:
        return
    cipher = _cipher()
    for row_id, event_id, payload in rows:
        patient_id = orjson.loads(bytes(payload)).get("patient_id")
        owner = patient_id or _WEBHOOKS_OWNER
        try:
            key = await_only(cipher.key_or_create(owner))
        except Exception:  # DataKeyDestroyed: the patient was erased, so is their notification
            bind.execute(sa.text("DELETE FROM webhook_deliveries WHERE id = :id"), {"id": row_id})
            continue
        sealed = key.seal(bytes(payload), "webhook_deliveries.payload", event_id)
        bind.execute(
            sa.text(
                "UPDATE webhook_deliveries SET payload = :sealed, patient_id = :patient "
                "WHERE id = :id"
            ),
            {"sealed": sealed, "patient": patient_id, "id": row_id},
        )


def upgrade() -> None:
    op.create_table(
        "device_signing_keys",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("required", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_signing_keys_device_id_devices"
        ),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_signing_keys"),
    )
    op.create_table(
        "signature_nonces",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "nonce", name="pk_signature_nonces"),
    )
    op.create_index("ix_signature_nonces_expires_at", "signature_nonces", ["expires_at"])
    _seal_totp_secrets()
    _seal_webhook_payloads()


def downgrade() -> None:
    raise NotImplementedError("sealed secrets are not unsealed by a downgrade")
