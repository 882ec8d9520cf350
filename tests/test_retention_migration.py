"""Migration 0007 (results retention) is expand-only on PostgreSQL: from 0006 it only adds a
nullable column and an index, so the release before runs beside it during a rollout; and the
by-hand path its docstring gives for large stores (built first, without blocking writes)
leaves the migration nothing to redo."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from scheduler.db import make_engine
from scheduler.migrate import alembic_config, upgrade
from tests.test_migrations import differences

BY_HAND = (
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS results_purged_at TIMESTAMP WITH TIME ZONE",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_unpurged_by_end ON jobs (end_timestamp) "
    "WHERE results_purged_at IS NULL AND end_timestamp IS NOT NULL",
)


@pytest.fixture
def empty_database(pg_url: str) -> Iterator[Engine]:
    """A new, empty database on the test server, dropped afterwards."""
    server = make_url(pg_url)
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"atomfleet_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(server.set(database=name).render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def upgrade_to(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def schema(engine: Engine) -> dict[str, Any]:
    found = inspect(engine)
    return {
        table: {
            "columns": {
                c["name"]: (str(c["type"]), c["nullable"]) for c in found.get_columns(table)
            },
            "indexes": {i["name"] for i in found.get_indexes(table)},
        }
        for table in found.get_table_names()
    }


def test_0007_only_adds_nullable_columns_and_indexes(empty_database: Engine) -> None:
    # Given a store at the release before
    upgrade_to(empty_database, "0006")
    before = schema(empty_database)
    # When 0007 runs
    upgrade_to(empty_database, "0007")
    after = schema(empty_database)
    # Then every table, column (same type and nullability) and index is still there
    assert set(before) <= set(after)
    for table, old in before.items():
        new = after[table]
        assert {k: new["columns"][k] for k in old["columns"]} == old["columns"], table
        assert old["indexes"] <= new["indexes"], table
        # and what it added is nullable: the release before inserts rows without it
        added = set(new["columns"]) - set(old["columns"])
        assert all(new["columns"][c][1] for c in added), (table, added)
    assert after["jobs"]["columns"]["results_purged_at"][1] is True
    assert "ix_jobs_unpurged_by_end" in after["jobs"]["indexes"]


def test_the_by_hand_build_for_large_stores_leaves_the_migration_nothing_to_redo(
    empty_database: Engine,
) -> None:
    # Given a store at 0006 where an operator ran the docstring's statements first
    upgrade_to(empty_database, "0006")
    with empty_database.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # CONCURRENTLY needs it
        for statement in BY_HAND:
            conn.execute(text(statement))
    # When the migration runs
    upgrade(empty_database)
    # Then it succeeds and the store is exactly the models
    assert differences(empty_database) == []
