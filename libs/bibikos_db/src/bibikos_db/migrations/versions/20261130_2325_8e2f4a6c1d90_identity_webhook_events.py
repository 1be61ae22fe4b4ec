"""identity webhook events

Revision ID: 8e2f4a6c1d90
Revises: 311b6baebc54
Create Date: 2026-11-30 23:25:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e2f4a6c1d90"
down_revision: str | Sequence[str] | None = "311b6baebc54"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Identity events received per tenant: replays of an id change nothing, and the newest
    # applied event of an external user orders the rest (auth.tables.WebhookEventTable).
    op.create_table(
        "auth_webhook_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("provider_user_id", sa.String(length=255), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_webhook_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_auth_webhook_events_event_id")),
    )
    op.create_index(
        op.f("ix_auth_webhook_events_provider_provider_user_id_occurred_at"),
        "auth_webhook_events",
        ["provider", "provider_user_id", "occurred_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_auth_webhook_events_provider_provider_user_id_occurred_at"),
        table_name="auth_webhook_events",
    )
    op.drop_table("auth_webhook_events")
