"""Events, cancels of every kind, reconciliation and dispatch racing on real PostgreSQL.

Threads drive random interleavings on one batch while a checker reads snapshots
(REPEATABLE READ) after every step: the batch's counters and the maintained job counts
always equal the rows, no count is negative, a terminal status is never left, a DONE job
has its result and no other job has one.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType, EventKind, JobStatus
from core.errors import ConflictError
from core.messages import JobEvent, JobResult
from scheduler import operations
from scheduler.events import apply_events
from scheduler.intake import Caller, Intake
from scheduler.listing import JobFilters
from scheduler.models import Batch, Job, JobCount, Result, utcnow
from scheduler.policies.strict import StrictPriority
from scheduler.reconcile import Reconciler
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.sequences import parametrized_sweep

JOBS = 12


def submit(sessions: sessionmaker[Session], account: Account, jobs: int) -> tuple[str, list[str]]:
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type="EMU_SV",
        sequence_builder=parametrized_sweep(3),
        jobs=[{"runs": 10 + i, "variables": {"omega": 5.0, "duration": 300}} for i in range(jobs)],
    )
    with sessions.begin() as session:
        submission = Intake(Settings()).create_batch(session, request, Caller(account.user_id))
        return submission.batch.id, [row["id"] for row in submission.jobs]


def dispatch(sessions: sessionmaker[Session]) -> None:
    """What the dispatcher does to the store: pick backlog jobs, stamp a new attempt."""
    with sessions.begin() as session:
        rows = StrictPriority().pick(session, DeviceType.EMU_SV, 4, utcnow())
        if rows:
            session.execute(
                update(Job)
                .where(Job.id.in_([r.id for r in rows]))
                .values(attempt=Job.attempt + 1, dispatched_at=utcnow())
            )


def event(sessions: sessionmaker[Session], job_id: str, kind: EventKind) -> None:
    with sessions() as session:  # the worker's attempt, as read from its message
        attempt = session.scalar(select(Job.attempt).where(Job.id == job_id)) or 1
    report = JobEvent(job_id=job_id, attempt=attempt, kind=kind, progress=50)
    if kind == EventKind.DONE:
        report.result = JobResult(counter={"000": 10})
    if kind == EventKind.ERROR:
        report.errors = ["boom"]
    with sessions.begin() as session:
        apply_events(session, [report])


def snapshot(sessions: sessionmaker[Session], batch_id: str) -> dict[str, Any]:
    with sessions() as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        batch = session.get(Batch, batch_id)
        assert batch is not None
        jobs = {
            j.id: j.status for j in session.scalars(select(Job).where(Job.batch_id == batch_id))
        }
        results = set(session.scalars(select(Result.job_id)))
        counts = {
            (status, n)
            for status, n in session.execute(
                select(JobCount.status, func.sum(JobCount.n)).group_by(JobCount.status)
            )
        }
        return {"batch": batch.counts(), "status": batch.status, "jobs": jobs,
                "results": results, "counts": counts}  # fmt: skip


def check(state: dict[str, Any], ended: dict[str, JobStatus]) -> None:
    rows = Counter(state["jobs"].values())
    assert state["batch"] == {s: rows.get(s, 0) for s in JobStatus}, "counters equal the rows"
    assert all(n >= 0 for n in state["batch"].values())
    maintained = {s: int(n) for s, n in state["counts"]}
    assert {s: maintained.get(s, 0) for s in JobStatus} == {s: rows.get(s, 0) for s in JobStatus}
    for job_id, status in state["jobs"].items():
        if job_id in ended:
            assert status == ended[job_id], f"{job_id} left {ended[job_id]} for {status}"
        elif status.is_terminal:
            ended[job_id] = status
        assert (job_id in state["results"]) == (status == JobStatus.DONE), (job_id, status)


def race(workers: list[Callable[[], None]], rounds: int, after: Callable[[], None]) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(step: Callable[[], None]) -> None:
        try:
            for _ in range(rounds):
                step()
                with lock:
                    after()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_keep_counts_equal_to_rows_and_terminal_states_terminal(
    sessions: sessionmaker[Session], account: Account, settings: Settings,
    redis_client: redis.Redis, seed: int,
) -> None:  # fmt: skip
    # Given a batch whose jobs are dispatched
    batch_id, job_ids = submit(sessions, account, JOBS)
    dispatch(sessions)
    dispatch(sessions)
    reconciler = Reconciler(settings, sessions, redis_client, [DeviceType.EMU_SV])
    ended: dict[str, JobStatus] = {}
    rng = random.Random(seed)

    def worker_events() -> None:
        kind = rng.choice([EventKind.RUNNING, EventKind.PROGRESS, EventKind.DONE, EventKind.ERROR])
        event(sessions, rng.choice(job_ids), kind)

    def cancels() -> None:
        choice = rng.random()
        with sessions.begin() as session:
            try:
                if choice < 0.6:
                    operations.cancel_job(session, account.user_id, rng.choice(job_ids))
                elif choice < 0.95:
                    filters = JobFilters(min_runs=rng.randint(10, 10 + JOBS))
                    operations.cancel_jobs(session, account.user_id, batch_id, filters)
                else:
                    operations.cancel_batch(session, account.user_id, batch_id)
            except ConflictError:
                pass

    def reconcile_and_dispatch() -> None:
        reconciler._requeue(rng.sample(job_ids, 3), utcnow())
        dispatch(sessions)

    # When they all race, checked after every step
    race(
        [worker_events, worker_events, cancels, reconcile_and_dispatch],
        rounds=25,
        after=lambda: check(snapshot(sessions, batch_id), ended),
    )
    # Then the invariants hold at the end too
    check(snapshot(sessions, batch_id), ended)


def test_a_hundred_concurrent_cancels_of_ten_jobs_succeed_exactly_ten_times(
    sessions: sessionmaker[Session], account: Account
) -> None:
    # Given ten running jobs
    batch_id, job_ids = submit(sessions, account, 10)
    dispatch(sessions)
    dispatch(sessions)
    dispatch(sessions)
    for job_id in job_ids:
        event(sessions, job_id, EventKind.RUNNING)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def cancel_all(offset: int) -> None:
        barrier.wait()
        for i in range(5):
            job_id = job_ids[(offset + i) % 10]
            try:
                with sessions.begin() as session:
                    operations.cancel_job(session, account.user_id, job_id)
                outcomes.append("ok")
            except ConflictError:
                outcomes.append("conflict")

    # When 20 threads send 100 cancels between them
    threads = [threading.Thread(target=cancel_all, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then exactly one cancel per job succeeded, and the counts match
    assert Counter(outcomes) == {"ok": 10, "conflict": 90}
    state = snapshot(sessions, batch_id)
    assert state["batch"][JobStatus.CANCELED] == 10
    assert state["batch"][JobStatus.RUNNING] == 0
    assert state["status"].value == "CANCELED"


def test_a_job_finishing_while_it_is_canceled_ends_one_way_only(
    sessions: sessionmaker[Session], account: Account
) -> None:
    # Given many running jobs, each raced by its DONE event and a cancel
    batch_id, job_ids = submit(sessions, account, 8)
    for _ in range(2):
        dispatch(sessions)
    for job_id in job_ids:
        event(sessions, job_id, EventKind.RUNNING)
    answers: dict[str, str] = {}

    def finish(job_id: str) -> None:
        event(sessions, job_id, EventKind.DONE)

    def cancel(job_id: str) -> None:
        try:
            with sessions.begin() as session:
                operations.cancel_job(session, account.user_id, job_id)
            answers[job_id] = "canceled"
        except ConflictError:
            answers[job_id] = "conflict"

    threads = []
    for job_id in job_ids:
        threads += [threading.Thread(target=finish, args=(job_id,)),
                    threading.Thread(target=cancel, args=(job_id,))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then each job is either DONE with its result (and the cancel was refused) or
    # CANCELED without one; the batch is not left waiting
    state = snapshot(sessions, batch_id)
    for job_id in job_ids:
        if state["jobs"][job_id] == JobStatus.DONE:
            assert answers[job_id] == "conflict" and job_id in state["results"]
        else:
            assert state["jobs"][job_id] == JobStatus.CANCELED
            assert answers[job_id] == "canceled" and job_id not in state["results"]
    check(state, {})
    assert state["status"].value in ("DONE", "CANCELED")
