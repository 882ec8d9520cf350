"""a job's remote id (QPU uid), when a batch last received a job

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('remote_id', sa.String(length=64), nullable=True))
    op.add_column('batches', sa.Column('last_job_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE batches SET last_job_at = created_at")
    with op.batch_alter_table('batches') as batch:
        batch.alter_column('last_job_at', nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('batches') as batch:
        batch.drop_column('last_job_at')
    op.drop_column('jobs', 'remote_id')
