"""order risk and alerts

Revision ID: c5a1f0000001
Revises: bc7a7e38076c
Create Date: 2026-12-03 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = 'c5a1f0000001'
down_revision: str | None = 'bc7a7e38076c'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.Integer(), nullable=True),
    sa.Column('resolved_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index('ix_alert_kind_created', ['kind', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_alert_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_alert_status_created', ['status', 'created_at'], unique=False)

    with op.batch_alter_table('order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('risk_score', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('risk_decision', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('risk_model_version', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column('risk_reasons', sa.JSON(), nullable=True))
        # Existing orders were never scored: false, not the fallback.
        batch_op.add_column(sa.Column('risk_fallback', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_order_email_created', ['email', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('order', schema=None) as batch_op:
        batch_op.drop_index('ix_order_email_created')
        batch_op.drop_column('risk_fallback')
        batch_op.drop_column('risk_reasons')
        batch_op.drop_column('risk_model_version')
        batch_op.drop_column('risk_decision')
        batch_op.drop_column('risk_score')

    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_status_created')
        batch_op.drop_index(batch_op.f('ix_alert_order_id'))
        batch_op.drop_index('ix_alert_kind_created')

    op.drop_table('alert')
