"""devices.type: what kind of device it is (FHIR Device.type, `Device?type=`)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 09:20:00

A token `system|code` (SNOMED CT when registered with a bare code); existing devices have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("type", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("type")
