"""Millions of batches and jobs written straight into the store with SQL, not through the API.

Rows respect what intake and the state machine would have written (`scheduler.intake.
job_row`, `scheduler.state`): a job's project, user, device, level and `created_at` are
its batch's; a PENDING job is in the backlog (`dispatched_at` NULL); started jobs have
`start_timestamp`, ended ones `end_timestamp`; `sequence` is NULL (the batch's
`sequence_builder` serves). After loading, `refresh_counts` recomputes every maintained
counter from the rows (the batches' counters and status, `job_counts`) and runs
VACUUM ANALYZE, as autovacuum would have. Connections given here are in autocommit mode.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from atomfleet.examples import parametrized_sweep
from bench.common import Account
from scheduler import accounts
from scheduler.db import make_engine, make_sessionmaker

DEVICES = ["EMU_SV", "EMU_MPS", "EMU_FREE", "EMU_SV", "FRESNEL"]


@dataclass(frozen=True)
class Team:
    """A user who belongs to several projects, and the other members of those projects."""

    caller: Account
    projects: list[str]
    users: list[str]


def team(database_url: str, projects: int = 3, users: int = 4) -> Team:
    engine = make_engine(database_url)
    with make_sessionmaker(engine).begin() as session:
        members = [
            accounts.create_user(session, f"bench-{uuid.uuid4().hex[:8]}") for _ in range(users)
        ]
        owned = [accounts.create_project(session, f"bench-{i}") for i in range(projects)]
        for user in members:
            for project in owned:
                accounts.add_member(session, user.id, project.id)
        token = accounts.create_token(session, members[0].id).token
        found = Team(
            Account(members[0].id, owned[0].id, token),
            [p.id for p in owned],
            [u.id for u in members],
        )
    engine.dispose()
    return found


def _plan_batches(conn: psycopg.Connection, sql: str, params: dict[str, object]) -> None:
    """Fill the temporary table `plan` (one row per batch to write) with `sql`."""
    conn.execute("DROP TABLE IF EXISTS plan")
    conn.execute(
        "CREATE TEMP TABLE plan (k int, id text, project_id text, user_id text, device_type text,"
        " queue_priority text, rank int, created_at timestamptz, size int, active bool,"
        " canceled bool, origin text, open bool)"
    )
    conn.execute(sql, params)


_BATCHES = """
INSERT INTO batches (id, project_id, user_id, parent_id, status, open, device_type,
    queue_priority, sequence_builder, backend_configuration, configuration, webhook, tags,
    created_at, updated_at, start_datetime, end_datetime, jobs_count, count_pending,
    count_running, count_done, count_error, count_canceled, last_job_at)
SELECT id, project_id, user_id, NULL, 'PENDING', open, device_type, queue_priority,
    %(builder)s, NULL, NULL, NULL,
    CASE WHEN k %% 7 = 0 THEN json_build_array('exp-' || k %% 20, 'calibration')
         ELSE json_build_array('exp-' || k %% 20) END,
    created_at, created_at, NULL, NULL, size, 0, 0, 0, 0, 0, created_at
FROM plan
"""

_TAGS = """
INSERT INTO batch_tags (batch_id, tag)
SELECT id, 'exp-' || k %% 20 FROM plan
UNION ALL SELECT id, 'calibration' FROM plan WHERE k %% 7 = 0
"""

# A job's fate from its batch (k, its size, whether active or canceled) and its order j.
# Active batches: DONE up to a point that moves with k, one RUNNING job (every 4th batch),
# the rest PENDING; canceled ones: the first half DONE, the rest CANCELED; others DONE with
# about 2% ERROR.
_JOBS = """
INSERT INTO jobs (id, batch_id, project_id, user_id, parent_id, creation_order, status, runs,
    variables, sequence, progress, errors, created_at, updated_at, start_timestamp,
    end_timestamp, device_type, priority_rank, dispatched_at, attempt, origin, atoms,
    duration_ns)
SELECT gen_random_uuid()::text, id, project_id, user_id, NULL, j, s.status,
    100 * (1 + (k + j) %% 20),
    json_build_object('omega', 2.0 + (j %% 100) / 12.5, 'duration', 200 + 8 * (j / 100)),
    NULL, CASE WHEN s.status IN ('DONE', 'ERROR') THEN 100 ELSE 0 END,
    CASE WHEN s.status = 'ERROR' THEN '["emulation failed: out of memory"]'::json END,
    created_at,
    CASE WHEN s.status = 'PENDING' THEN created_at ELSE created_at + (j + 1) * second END,
    CASE WHEN s.status NOT IN ('PENDING', 'CANCELED') THEN created_at + j * second END,
    CASE WHEN s.status IN ('DONE', 'ERROR', 'CANCELED') THEN created_at + (j + 1) * second END,
    device_type, rank,
    CASE WHEN s.status NOT IN ('PENDING', 'CANCELED') THEN created_at + j * second END,
    CASE WHEN s.status IN ('PENDING', 'CANCELED') THEN 0 ELSE 1 END,
    origin, 4, 2 * (200 + 8 * (j / 100))
FROM plan
CROSS JOIN LATERAL generate_series(0, size - 1) AS j
CROSS JOIN (SELECT interval '1 s' AS second) AS unit
CROSS JOIN LATERAL (SELECT CASE
    WHEN active AND j < size * (%(nb)s - k) / %(active)s THEN 'DONE'
    WHEN active AND j = size * (%(nb)s - k) / %(active)s AND k %% 4 = 0 THEN 'RUNNING'
    WHEN active THEN 'PENDING'
    WHEN canceled AND j >= size / 2 THEN 'CANCELED'
    WHEN (j * 7 + k) %% 53 = 0 THEN 'ERROR'
    ELSE 'DONE' END AS status) AS s
"""


def load_history(
    conn: psycopg.Connection,
    team: Team,
    *,
    big_batches: int = 90,
    big_size: int = 10_000,
    small_batches: int = 10_000,
    small_size: int = 10,
    days: int = 90,
    active_batches: int = 490,
) -> None:
    """A platform's history: `big_batches` of `big_size` jobs spread among `small_batches`
    of `small_size` over `days`, the newest being big; the newest `active_batches` still
    running, the rest ended (mostly DONE, some ERROR, every 41st canceled)."""
    nb = big_batches + small_batches
    step = max(1, nb // big_batches)
    _plan_batches(
        conn,
        """
        INSERT INTO plan
        SELECT k, gen_random_uuid()::text,
            (%(projects)s::text[])[1 + k %% cardinality(%(projects)s::text[])],
            (%(users)s::text[])[1 + (k + k / %(step)s) %% cardinality(%(users)s::text[])],
            (%(devices)s::text[])[1 + k %% cardinality(%(devices)s::text[])],
            CASE WHEN k %% 10 = 0 THEN 'HIGH' WHEN k %% 10 < 4 THEN 'MEDIUM' ELSE 'LOW' END,
            CASE WHEN k %% 10 = 0 THEN 0 WHEN k %% 10 < 4 THEN 1 ELSE 2 END,
            now() - %(days)s * interval '1 day' * (%(nb)s - k) / %(nb)s,
            CASE WHEN (%(nb)s - k) %% %(step)s = 0 AND (%(nb)s - k) / %(step)s < %(big)s
                 THEN %(big_size)s ELSE %(small_size)s END,
            k > %(nb)s - %(active)s,
            k <= %(nb)s - %(active)s AND k %% 41 = 0,
            CASE WHEN k %% 20 = 0 THEN 'AZURE' WHEN k %% 97 = 0 THEN 'UNKNOWN' ELSE 'CLIENT' END,
            k > %(nb)s - %(active)s AND k %% 50 = 0
        FROM generate_series(1, %(nb)s) AS k
        """,
        {
            "projects": team.projects,
            "users": team.users,
            "devices": DEVICES,
            "days": days,
            "nb": nb,
            "step": step,
            "big": big_batches,
            "big_size": big_size,
            "small_size": small_size,
            "active": active_batches,
        },
    )
    _write(conn, nb, active_batches)


def load_backlog(
    conn: psycopg.Connection,
    account: Account,
    jobs: int,
    *,
    device: str,
    priority: str = "LOW",
    batch_size: int = 10_000,
) -> None:
    """`jobs` PENDING jobs of `device` at `priority`, waiting in the backlog, in batches of
    `batch_size` created one second apart (older than anything submitted afterwards)."""
    rank = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}[priority]
    batches = -(-jobs // batch_size)
    _plan_batches(
        conn,
        """
        INSERT INTO plan
        SELECT k, gen_random_uuid()::text, %(project)s, %(user)s, %(device)s, %(priority)s,
            %(rank)s, now() - interval '1 hour' + k * interval '1 s',
            least(%(size)s, %(jobs)s - (k - 1) * %(size)s), true, false, 'CLIENT', false
        FROM generate_series(1, %(batches)s) AS k
        """,
        {
            "project": account.project_id,
            "user": account.user_id,
            "device": device,
            "priority": priority,
            "rank": rank,
            "size": batch_size,
            "jobs": jobs,
            "batches": batches,
        },
    )
    # Every job PENDING: an "active" batch whose DONE point is before its first job.
    _write(conn, nb=0, active=1)


def _write(conn: psycopg.Connection, nb: int, active: int) -> None:
    with conn.transaction():
        conn.execute(_BATCHES, {"builder": parametrized_sweep(4)})
        conn.execute(_TAGS, {})
        with _indexes_rebuilt(conn, "jobs"):
            conn.execute(_JOBS, {"nb": nb, "active": active})


@contextlib.contextmanager
def _indexes_rebuilt(conn: psycopg.Connection, table: str) -> Iterator[None]:
    """Drop `table`'s indexes (its primary key aside) and build them again afterwards: one
    sort per index is much faster than a million random insertions into each."""
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        (table,),
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    yield
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for _, definition in indexes:
        conn.execute(definition)


_BATCH_COUNTERS = """
UPDATE batches b SET
    jobs_count = c.total, count_pending = c.pending, count_running = c.running,
    count_done = c.done, count_error = c.error, count_canceled = c.canceled
FROM (SELECT batch_id, count(*) AS total,
        count(*) FILTER (WHERE status = 'PENDING') AS pending,
        count(*) FILTER (WHERE status = 'RUNNING') AS running,
        count(*) FILTER (WHERE status = 'DONE') AS done,
        count(*) FILTER (WHERE status = 'ERROR') AS error,
        count(*) FILTER (WHERE status = 'CANCELED') AS canceled,
        min(start_timestamp) AS started, max(end_timestamp) AS ended
      FROM jobs WHERE batch_id IN (SELECT id FROM plan) GROUP BY batch_id) c
WHERE b.id = c.batch_id
"""

# scheduler.state.derive_batch_status and refresh_batch, in SQL.
_BATCH_STATUS = """
UPDATE batches SET
    status = CASE
        WHEN count_pending + count_running > 0 OR open THEN
            CASE WHEN count_running + count_done + count_error > 0 THEN 'RUNNING' ELSE 'PENDING' END
        WHEN jobs_count > 0 AND count_canceled = jobs_count THEN 'CANCELED'
        WHEN count_error > 0 THEN 'ERROR'
        ELSE 'DONE' END,
    start_datetime = CASE WHEN count_running + count_done + count_error > 0
        THEN created_at + interval '1 s' END,
    end_datetime = CASE WHEN count_pending + count_running = 0 AND NOT open
        THEN created_at + (jobs_count + 1) * interval '1 s' END,
    updated_at = created_at + (jobs_count + 1) * interval '1 s'
WHERE id IN (SELECT id FROM plan)
"""

_JOB_COUNTS = """
INSERT INTO job_counts (project_id, user_id, device_type, priority_rank, status, n)
SELECT project_id, user_id, device_type, priority_rank, status, count(*) FROM jobs
GROUP BY project_id, user_id, device_type, priority_rank, status
"""


def refresh_counts(conn: psycopg.Connection) -> None:
    """Every maintained counter recomputed from the rows just written; then VACUUM ANALYZE."""
    with conn.transaction():
        conn.execute(_BATCH_COUNTERS)
        conn.execute(_BATCH_STATUS)
        conn.execute("DELETE FROM job_counts")
        conn.execute(_JOB_COUNTS)
    conn.execute("VACUUM ANALYZE batches, batch_tags, jobs, job_counts")
