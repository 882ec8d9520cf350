"""One state machine, one lock order: every change of a job's status goes through here.

Lock order everywhere: the batch rows (by id), then the job rows (by id), then the
`job_counts` rows (by key, at commit). Rows are re-read under their lock
(`populate_existing`), so a decision is never taken on a stale copy.

The ledger of a transaction counts what its moves change in `job_counts` and writes the
sums just before the commit, in key order; it also keeps the list of moves, which the
caller reacts to once committed (cancel flags, waking the dispatcher, metrics).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Float, Table, bindparam, event, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.enums import ENDED_BATCH_STATUSES, BatchStatus, DeviceType, JobStatus
from scheduler.models import Batch, Job, JobCount, ProjectUsage, utcnow
from scheduler.state import move_job

log = logging.getLogger(__name__)

COUNTS = cast(Table, JobCount.__table__)
USAGE = cast(Table, ProjectUsage.__table__)
CountKey = tuple[str, str, DeviceType, int, JobStatus]


@dataclass(frozen=True)
class Move:
    job_id: str
    batch_id: str
    device_type: DeviceType
    priority_rank: int
    old: JobStatus
    new: JobStatus
    at: datetime
    created_at: datetime
    # The job's start after the move (None: it never ran), and whether this move gave it:
    # the job left the queue now (its first RUNNING, or an end before it said RUNNING).
    started_at: datetime | None = None
    first_start: bool = False


@dataclass
class Ledger:
    deltas: Counter[CountKey] = field(default_factory=Counter)
    moves: list[Move] = field(default_factory=list)
    # New jobs per (device, priority rank).
    created_jobs: Counter[tuple[DeviceType, int]] = field(default_factory=Counter)
    # Lost jobs put back in the backlog, per device (a PENDING job whose message vanished
    # is requeued without a status change, so it is not among the moves).
    requeued: Counter[DeviceType] = field(default_factory=Counter)
    # Devices whose backlog grew or whose capacity was freed: the dispatcher is woken.
    wake: set[DeviceType] = field(default_factory=set)
    # Run seconds of the jobs that ended, per (project, device): the fair share's usage.
    usage: dict[tuple[str, DeviceType], float] = field(default_factory=lambda: defaultdict(float))
    usage_jobs: Counter[tuple[str, DeviceType]] = field(default_factory=Counter)
    # The batches locked in this transaction, with their status when locked.
    batches: dict[str, tuple[Batch, BatchStatus]] = field(default_factory=dict)

    def ended_batches(self) -> list[Batch]:
        """Batches this transaction ended (DONE, ERROR, CANCELED or TIMED_OUT)."""
        return [
            batch
            for batch, before in self.batches.values()
            if batch.status in ENDED_BATCH_STATUSES and before not in ENDED_BATCH_STATUSES
        ]

    def move(
        self,
        batch: Batch,
        job: Job,
        status: JobStatus,
        at: datetime,
        started_at: datetime | None = None,
    ) -> bool:
        """Move a locked job (and its locked batch's counters); False if not allowed.

        `started_at`: when the job started on its worker, for an end reported before the
        job was seen RUNNING (kept only if the job has no start yet).
        """
        old = job.status
        had_start = job.start_timestamp is not None
        if not move_job(batch, job, status, at):
            return False
        if job.start_timestamp is None and started_at is not None:
            job.start_timestamp = started_at
        key = (job.project_id, job.user_id, job.device_type, job.priority_rank)
        self.deltas[(*key, old)] -= 1
        self.deltas[(*key, status)] += 1
        if status.is_terminal and job.start_timestamp is not None:
            run_s = max(0.0, (at - job.start_timestamp).total_seconds())
            self.usage[(job.project_id, job.device_type)] += run_s
            self.usage_jobs[(job.project_id, job.device_type)] += 1
        self.moves.append(
            Move(
                job.id,
                job.batch_id,
                job.device_type,
                job.priority_rank,
                old,
                status,
                at,
                created_at=job.created_at,
                started_at=job.start_timestamp,
                first_start=not had_start and job.start_timestamp is not None,
            )
        )
        if status.is_terminal or status == JobStatus.PENDING:
            self.wake.add(job.device_type)
        return True

    def requeue(self, batch: Batch, job: Job, at: datetime) -> None:
        """Put a lost job back in the backlog (RUNNING, or PENDING with its message gone)."""
        self.move(batch, job, JobStatus.PENDING, at)
        job.dispatched_at = None
        job.progress = 0
        self.requeued[job.device_type] += 1
        self.wake.add(job.device_type)

    def created(self, batch: Batch, jobs: int) -> None:
        """`jobs` new PENDING jobs of `batch`."""
        rank = batch.queue_priority.rank
        key = (batch.project_id, batch.user_id, batch.device_type, rank, JobStatus.PENDING)
        self.deltas[key] += jobs
        self.created_jobs[(batch.device_type, rank)] += jobs
        self.wake.add(batch.device_type)

    def ended(self) -> list[Move]:
        return [m for m in self.moves if m.new.is_terminal]

    def canceled(self) -> list[Move]:
        return [m for m in self.moves if m.new == JobStatus.CANCELED]

    def write_counts(self, session: Session) -> None:
        rows = [
            {
                "project_id": k[0],
                "user_id": k[1],
                "device_type": k[2],
                "priority_rank": k[3],
                "status": k[4],
                "n": n,
            }
            for k, n in sorted(self.deltas.items(), key=lambda kv: _sort_key(kv[0]))
            if n
        ]
        self.deltas.clear()
        if not rows:
            return
        dialect = session.get_bind().dialect.name
        # One statement compiled once, executed for the rows in key order (one round trip):
        # two transactions never wait on each other's counter rows in opposite orders.
        session.connection().execute(_ADD_COUNTS[dialect], rows)

    def write_usage(self, session: Session, half_life_s: float) -> None:
        """Add the ended jobs' run time to their projects' decayed usage (after the counts:
        the lock order), in key order."""
        keys = sorted(self.usage, key=lambda k: (k[0], k[1].value))
        if not keys:
            return
        now = utcnow()
        if session.get_bind().dialect.name == "postgresql":
            self._upsert_usage(session, keys, now, half_life_s)
            return
        rows = {
            (u.project_id, u.device_type): u
            for u in session.scalars(
                select(ProjectUsage)
                .where(tuple_(ProjectUsage.project_id, ProjectUsage.device_type).in_(keys))
                .order_by(ProjectUsage.project_id, ProjectUsage.device_type)
                .with_for_update()
            )
        }
        for key in keys:
            usage = rows.get(key)
            if usage is None:
                usage = ProjectUsage(
                    project_id=key[0], device_type=key[1], decayed_run_s=0.0, decayed_at=now,
                    jobs=0, run_s=0.0,
                )  # fmt: skip
                session.add(usage)
            elapsed = max(0.0, (now - usage.decayed_at).total_seconds())
            usage.decayed_run_s = usage.decayed_run_s * 0.5 ** (elapsed / half_life_s)
            usage.decayed_run_s += self.usage[key]
            usage.decayed_at = now
            usage.jobs += self.usage_jobs[key]
            usage.run_s += self.usage[key]
        self.usage.clear()
        self.usage_jobs.clear()
        session.flush()

    def _upsert_usage(
        self,
        session: Session,
        keys: list[tuple[str, DeviceType]],
        now: datetime,
        half_life_s: float,
    ) -> None:
        """PostgreSQL: the decay and the sums in one statement (a round trip, not a locked
        read, an update and a flush), its rows in key order."""
        rows = [
            {
                "project_id": project_id,
                "device_type": device,
                "decayed_run_s": self.usage[(project_id, device)],
                "decayed_at": now,
                "jobs": self.usage_jobs[(project_id, device)],
                "run_s": self.usage[(project_id, device)],
                "half_life_s": half_life_s,
            }
            for project_id, device in keys
        ]
        session.connection().execute(_ADD_USAGE, rows)
        self.usage.clear()
        self.usage_jobs.clear()


DEFAULT_HALF_LIFE_S = 24 * 3600.0
_KEY_COLUMNS = ("project_id", "user_id", "device_type", "priority_rank", "status")


def _add_counts(insert: Callable[[Table], Any]) -> Any:
    stmt = insert(COUNTS)
    return stmt.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS), set_={"n": COUNTS.c.n + stmt.excluded.n}
    )


_ADD_COUNTS = {"postgresql": _add_counts(pg_insert), "sqlite": _add_counts(sqlite_insert)}


def _add_usage() -> Any:
    """PostgreSQL: decay the stored usage to now and add the new run time, in one upsert."""
    stmt = pg_insert(USAGE)
    elapsed = func.greatest(
        0.0, func.extract("epoch", stmt.excluded.decayed_at - USAGE.c.decayed_at)
    )
    return stmt.on_conflict_do_update(
        index_elements=[USAGE.c.project_id, USAGE.c.device_type],
        set_={
            "decayed_run_s": USAGE.c.decayed_run_s
            * func.power(0.5, elapsed / bindparam("half_life_s", type_=Float))
            + stmt.excluded.decayed_run_s,
            "decayed_at": stmt.excluded.decayed_at,
            "jobs": USAGE.c.jobs + stmt.excluded.jobs,
            "run_s": USAGE.c.run_s + stmt.excluded.run_s,
        },
    )


_ADD_USAGE = _add_usage()


def _sort_key(key: CountKey) -> tuple[str, str, str, int, str]:
    return (key[0], key[1], key[2].value, key[3], key[4].value)


def ledger(session: Session) -> Ledger:
    """The ledger of `session`'s current transaction."""
    found: Ledger | None = session.info.get("ledger")
    if found is None:
        found = session.info["ledger"] = Ledger()
    return found


Reactor = Callable[[Ledger], None]
"""Called with each committed ledger (Redis flags, wake-ups, metrics); must not raise."""


class StoreSession(Session):
    """Sessions of the store: the ledger's counts are written just before each commit, and
    the process's reactors see it once committed."""


@event.listens_for(StoreSession, "before_commit")
def _write_counts(session: Session) -> None:
    found: Ledger | None = session.info.get("ledger")
    if found is not None:
        found.write_counts(session)
        found.write_usage(session, session.info.get("half_life_s", DEFAULT_HALF_LIFE_S))


@event.listens_for(StoreSession, "after_commit")
def _react(session: Session) -> None:
    committed: Ledger | None = session.info.pop("ledger", None)
    if committed is None or not (committed.moves or committed.wake or committed.batches):
        return
    for reactor in session.info.get("reactors", ()):
        try:
            reactor(committed)
        except Exception:  # the write is committed: never fail the caller after it
            log.exception("reacting to a commit failed")


@event.listens_for(StoreSession, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop("ledger", None)


def lock_batches(session: Session, ids: Iterable[str]) -> dict[str, Batch]:
    """The batches, locked in id order and read fresh."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.scalars(
        select(Batch)
        .where(Batch.id.in_(wanted))
        .order_by(Batch.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    found = {b.id: b for b in rows}
    book = ledger(session)
    for batch in found.values():
        book.batches.setdefault(batch.id, (batch, batch.status))
    return found


def lock_jobs(session: Session, ids: Iterable[str]) -> dict[str, Job]:
    """The jobs, locked in id order and read fresh (after their batches: the lock order)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    found: dict[str, Job] = {}
    for chunk in _chunks(wanted, 1000):
        rows = session.scalars(
            select(Job)
            .where(Job.id.in_(chunk))
            .order_by(Job.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        found.update((j.id, j) for j in rows)
    return found


def batch_ids_of(session: Session, job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> batch id (immutable, so read without a lock)."""
    wanted = sorted(set(job_ids))
    found: dict[str, str] = {}
    for chunk in _chunks(wanted, 1000):
        found.update(
            (row.id, row.batch_id)
            for row in session.execute(select(Job.id, Job.batch_id).where(Job.id.in_(chunk)))
        )
    return found


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
