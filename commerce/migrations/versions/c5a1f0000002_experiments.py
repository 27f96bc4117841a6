"""experiments and exposures

Revision ID: c5a1f0000002
Revises: c5a1f0000001
Create Date: 2026-12-03 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = 'c5a1f0000002'
down_revision: str | None = 'c5a1f0000001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('experiment',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('surface', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('variants', sa.JSON(), nullable=False),
    sa.Column('guard', sa.JSON(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('stopped_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('experiment', schema=None) as batch_op:
        # One running experiment per surface, enforced by the database (a partial unique index).
        batch_op.create_index(
            'uq_experiment_running_surface',
            ['surface'],
            unique=True,
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )

    op.create_table('experiment_exposure',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('experiment_id', sa.String(length=32), nullable=False),
    sa.Column('variant', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('unit', sqlmodel.sql.sqltypes.AutoString(length=140), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiment.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('experiment_exposure', schema=None) as batch_op:
        batch_op.create_index('ix_experiment_exposure_unit', ['experiment_id', 'unit', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('experiment_exposure', schema=None) as batch_op:
        batch_op.drop_index('ix_experiment_exposure_unit')

    op.drop_table('experiment_exposure')
    with op.batch_alter_table('experiment', schema=None) as batch_op:
        batch_op.drop_index('uq_experiment_running_surface')

    op.drop_table('experiment')
