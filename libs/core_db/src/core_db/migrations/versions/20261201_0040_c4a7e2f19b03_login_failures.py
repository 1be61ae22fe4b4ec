"""login failures

Revision ID: c4a7e2f19b03
Revises: 5b1e0c9d7a31
Create Date: 2026-12-01 00:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4a7e2f19b03"
down_revision: str | Sequence[str] | None = "5b1e0c9d7a31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Failed logins per account and per client address, in a fixed window, shared by every
    # worker process (auth.tables.LoginFailureTable).
    op.create_table(
        "auth_login_failures",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column(
            "window_started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('account', 'address')", name=op.f("ck_auth_login_failures_kind")
        ),
        sa.CheckConstraint(
            "failures >= 0", name=op.f("ck_auth_login_failures_failures_not_negative")
        ),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_auth_login_failures")),
    )
    op.create_index(
        op.f("ix_auth_login_failures_window_started_at"),
        "auth_login_failures",
        ["window_started_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_auth_login_failures_window_started_at"), table_name="auth_login_failures"
    )
    op.drop_table("auth_login_failures")
