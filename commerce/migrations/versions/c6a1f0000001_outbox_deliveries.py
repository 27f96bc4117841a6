"""outbox deliveries (exactly-once sends)

Revision ID: c6a1f0000001
Revises: c5a1f0000002
Create Date: 2026-12-03 10:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = 'c6a1f0000001'
down_revision: str | None = 'c5a1f0000002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('next_attempt_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['outbox_event.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'channel', name='uq_outbox_delivery_channel')
    )
    with op.batch_alter_table('outbox_delivery', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_delivery_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_delivery_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_delivery_status'))
        batch_op.drop_index(batch_op.f('ix_outbox_delivery_event_id'))

    op.drop_table('outbox_delivery')
