"""paging: channels, pages and their deliveries, snoozes, on-call rosters, escalation chains

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 08:15:00

Existing care plans' free-text escalation targets become chains (docs/paging.md#migration):
a text naming exactly one staff account (by username, else by display name, ignoring case)
becomes [primary clinician → that person]; any other text is left where it was, unmapped,
and the plan gets the default chain.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def _fk(table: str, column: str, other: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{other}.id"], name=f"fk_{table}_{column}_{other}")


def upgrade() -> None:
    op.create_table(
        "paging_channels",
        sa.Column("id", sa.String(36)),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2000), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        _fk("paging_channels", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_paging_channels"),
    )
    op.create_index(
        "ix_paging_channels_user_id_position", "paging_channels", ["user_id", "position"]
    )
    op.create_table(
        "pages",
        sa.Column("id", sa.String(36)),
        sa.Column("recipient_id", sa.String(36), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("sent_at", _TIME, nullable=True),
        sa.Column("escalate_at", _TIME, nullable=True),
        sa.Column("acknowledged_at", _TIME, nullable=True),
        sa.Column("acknowledged_by", sa.String(36), nullable=True),
        sa.Column("acknowledged_via", sa.String(16), nullable=True),
        _fk("pages", "recipient_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_pages"),
    )
    op.create_index("ix_pages_status_due_at", "pages", ["status", "due_at"])
    op.create_index("ix_pages_recipient_id_status", "pages", ["recipient_id", "status"])
    op.create_table(
        "page_alerts",
        sa.Column("page_id", sa.String(36)),
        sa.Column("alert_id", sa.String(36)),
        sa.Column("patient_id", sa.String(36), nullable=False),
        _fk("page_alerts", "page_id", "pages"),
        _fk("page_alerts", "alert_id", "alerts"),
        _fk("page_alerts", "patient_id", "patients"),
        sa.PrimaryKeyConstraint("page_id", "alert_id", name="pk_page_alerts"),
    )
    op.create_index("ix_page_alerts_alert_id", "page_alerts", ["alert_id"])
    op.create_index("ix_page_alerts_patient_id", "page_alerts", ["patient_id"])
    op.create_table(
        "page_deliveries",
        sa.Column("id", sa.String(36)),
        sa.Column("page_id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=True),
        sa.Column("channel_kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("attempted_at", _TIME, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("code_expires_at", _TIME, nullable=True),
        sa.Column("code_used_at", _TIME, nullable=True),
        _fk("page_deliveries", "page_id", "pages"),
        sa.PrimaryKeyConstraint("id", name="pk_page_deliveries"),
        sa.UniqueConstraint("code_hash", name="uq_page_deliveries_code_hash"),
    )
    op.create_index("ix_page_deliveries_page_id", "page_deliveries", ["page_id"])
    op.create_table(
        "alert_snoozes",
        sa.Column("alert_id", sa.String(36)),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("until", _TIME, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("reason", sa.LargeBinary(), nullable=False),
        sa.Column("snoozed_by", sa.String(36), nullable=False),
        sa.Column("snoozed_at", _TIME, nullable=False),
        _fk("alert_snoozes", "alert_id", "alerts"),
        _fk("alert_snoozes", "patient_id", "patients"),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alert_snoozes"),
    )
    op.create_index("ix_alert_snoozes_patient_id", "alert_snoozes", ["patient_id"])
    op.create_table(
        "oncall_teams",
        sa.Column("id", sa.String(36)),
        sa.Column("organization_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("lead_id", sa.String(36), nullable=True),
        sa.Column("fallback_id", sa.String(36), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("updated_by", sa.String(36), nullable=False),
        _fk("oncall_teams", "organization_id", "organizations"),
        _fk("oncall_teams", "lead_id", "users"),
        _fk("oncall_teams", "fallback_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_oncall_teams"),
        sa.UniqueConstraint("organization_id", "name", name="uq_oncall_teams_organization_id_name"),
    )
    op.create_table(
        "oncall_shifts",
        sa.Column("id", sa.String(36)),
        sa.Column("team_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=True),
        sa.Column("start_time", sa.String(5), nullable=True),
        sa.Column("end_time", sa.String(5), nullable=True),
        sa.Column("starts_at", _TIME, nullable=True),
        sa.Column("ends_at", _TIME, nullable=True),
        _fk("oncall_shifts", "team_id", "oncall_teams"),
        _fk("oncall_shifts", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_oncall_shifts"),
    )
    op.create_index("ix_oncall_shifts_team_id", "oncall_shifts", ["team_id"])
    with op.batch_alter_table("care_plans") as batch:
        batch.add_column(sa.Column("escalation_chain", sa.Text(), nullable=True))
    _map_free_text_targets()


def _map_free_text_targets() -> None:
    """Each plan's free-text escalation target, where it names one staff account, becomes
    the chain primary → that account (docs/paging.md#migration)."""
    conn = op.get_bind()
    staff = conn.execute(
        sa.text("SELECT id, username, display_name FROM users WHERE role <> 'patient'")
    ).all()
    plans = conn.execute(
        sa.text(
            "SELECT patient_id, escalation_clinician FROM care_plans "
            "WHERE escalation_clinician IS NOT NULL"
        )
    ).all()
    for patient_id, target in plans:
        text = str(target).strip().lower()
        found = [u for u in staff if u.username.lower() == text] or [
            u for u in staff if u.display_name.lower() == text
        ]
        if len(found) != 1:
            continue
        chain = json.dumps([{"to": "primary"}, {"to": "user", "user": found[0].id}])
        conn.execute(
            sa.text("UPDATE care_plans SET escalation_chain = :chain WHERE patient_id = :p"),
            {"chain": chain, "p": patient_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("care_plans") as batch:
        batch.drop_column("escalation_chain")
    for table in (
        "oncall_shifts",
        "oncall_teams",
        "alert_snoozes",
        "page_deliveries",
        "page_alerts",
        "pages",
        "paging_channels",
    ):
        op.drop_table(table)
