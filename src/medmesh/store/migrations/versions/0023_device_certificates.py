"""device_certificates: client certificates issued by the device CA, and their revocation

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 12:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TIME = sa.DateTime(timezone=True)

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("not_before", _TIME, nullable=False),
        sa.Column("not_after", _TIME, nullable=False),
        sa.Column("issued_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_certificates_device_id_devices"
        ),
        sa.PrimaryKeyConstraint("serial", name="pk_device_certificates"),
    )
    op.create_index("ix_device_certificates_device_id", "device_certificates", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_device_certificates_device_id", table_name="device_certificates")
    op.drop_table("device_certificates")
