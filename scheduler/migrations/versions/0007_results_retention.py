"""results retention: when a job's result was purged, and the index the purge walks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:00:00

Expand only (a nullable column and an index), so that the API, scheduler and workers of the
release before run side by side with this one during a rollout: they neither read nor write
the column. The index is partial: only ended jobs not yet purged are in it. Building it
blocks writes to `jobs` meanwhile (about a second per million jobs); on a large store, build
both by hand first without blocking writes, and the migration finds them and skips them:
  ALTER TABLE jobs ADD COLUMN IF NOT EXISTS results_purged_at TIMESTAMP WITH TIME ZONE;
  CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_unpurged_by_end ON jobs (end_timestamp)
  WHERE results_purged_at IS NULL AND end_timestamp IS NOT NULL;
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_UNPURGED_ENDED = sa.text("results_purged_at IS NULL AND end_timestamp IS NOT NULL")


def upgrade() -> None:
    # (SQLite, the one-machine store, has no ADD COLUMN IF NOT EXISTS and no large tables.)
    postgresql = op.get_bind().dialect.name == 'postgresql'
    op.add_column(
        'jobs', sa.Column('results_purged_at', sa.DateTime(timezone=True), nullable=True),
        if_not_exists=postgresql,
    )
    op.create_index(
        'ix_jobs_unpurged_by_end', 'jobs', ['end_timestamp'], if_not_exists=True,
        postgresql_where=_UNPURGED_ENDED, sqlite_where=_UNPURGED_ENDED,
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_unpurged_by_end', table_name='jobs')
    op.drop_column('jobs', 'results_purged_at')
