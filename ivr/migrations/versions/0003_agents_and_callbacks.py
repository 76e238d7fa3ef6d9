"""Agents as identities (accounts, desk sessions, the legs that dial them, wrap-up) and callbacks that are
placed (dial attempts, machine detection, STOP opt-outs).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("reach", sa.String(256), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text),
        sa.Column("status_since", _TZ, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("agent", sa.String(64), sa.ForeignKey("agents.name", ondelete="CASCADE"), index=True, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
    )
    op.create_table(
        "agent_legs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "escalation_id",
            sa.Integer,
            sa.ForeignKey("escalations.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        ),
        sa.Column(
            "call_sid", sa.String(64), sa.ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True, nullable=False
        ),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("reach", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dialled_at", _TZ, nullable=False),
        sa.Column("answered_at", _TZ),
        sa.Column("ended_at", _TZ),
        sa.Column("talk_s", sa.Float),
        sa.Column("disposition", sa.String(64)),
        sa.Column("notes", sa.Text),
        sa.Column("wrapped_at", _TZ),
        sa.Column("crm_status", sa.String(32)),
    )
    op.create_table(
        "sms_opt_outs",
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("keyword", sa.String(16), nullable=False),
    )
    with op.batch_alter_table("callbacks") as batch:
        batch.add_column(sa.Column("call_attempts", sa.Integer))
        batch.add_column(sa.Column("outbound_call_sid", sa.String(64)))
        batch.add_column(sa.Column("answered_by", sa.String(32)))
        batch.add_column(sa.Column("last_attempt_at", _TZ))


def downgrade() -> None:
    with op.batch_alter_table("callbacks") as batch:
        for name in ("last_attempt_at", "answered_by", "outbound_call_sid", "call_attempts"):
            batch.drop_column(name)
    for name in ("sms_opt_outs", "agent_legs", "agent_sessions", "agents"):
        op.drop_table(name)
