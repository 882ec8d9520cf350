"""The dispatch policies on real PostgreSQL, with an injected clock: levels first, fair share
by weight across projects, running caps, aging; and the same order read for queue
positions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType, JobStatus, QueuePriority
from scheduler import projects
from scheduler.db import make_engine, make_sessionmaker
from scheduler.intake import Caller, Intake
from scheduler.ledger import ledger, lock_batches, lock_jobs
from scheduler.migrate import upgrade
from scheduler.models import Job, ProjectUsage, utcnow
from scheduler.policies.fair_share import FairShare
from scheduler.policies.strict import StrictPriority
from scheduler.run_times import COLD_TTL_S, DEFAULT_RUN_S, MODEL_TTL_S, RunTimes
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account, make_account
from tests.sequences import plain

DEVICE = DeviceType.NOOP
SETTINGS = Settings(devices=[DEVICE])
HOUR = timedelta(hours=1)


def submit(
    sessions: sessionmaker[Session], account: Account, jobs: int, priority: str = "MEDIUM",
    created: datetime | None = None,
) -> list[str]:  # fmt: skip
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type="NOOP",
        queue_priority=priority,
        sequence_builder=plain(2),
        jobs=[{"runs": 5}] * jobs,
    )
    with sessions.begin() as session:
        rows = Intake(SETTINGS).create_batch(session, request, Caller(account.user_id)).jobs
        ids = [r["id"] for r in rows]
        if created is not None:
            session.execute(update(Job).where(Job.id.in_(ids)).values(created_at=created))
    return ids


def order(sessions: sessionmaker[Session], policy: object, n: int, now: datetime) -> list[str]:
    """The next `n` jobs the policy would dispatch, taking each (as the dispatcher does)."""
    taken = []
    with sessions.begin() as session:
        for row in policy.pick(session, DEVICE, n, now):  # type: ignore[attr-defined]
            taken.append(row.id)
        session.execute(update(Job).where(Job.id.in_(taken)).values(dispatched_at=now, attempt=1))
    return taken


def finish(sessions: sessionmaker[Session], job_ids: list[str], run_s: float, at: datetime) -> None:
    """The jobs ran `run_s` seconds each and ended DONE at `at` (through the ledger)."""
    with sessions.begin() as session:
        batch_of = {j.id: j.batch_id for j in session.query(Job).filter(Job.id.in_(job_ids))}
        batches = lock_batches(session, batch_of.values())
        jobs = lock_jobs(session, job_ids)
        book = ledger(session)
        for job in jobs.values():
            book.move(batches[job.batch_id], job, JobStatus.RUNNING, at - timedelta(seconds=run_s))
            book.move(batches[job.batch_id], job, JobStatus.DONE, at)


@pytest.fixture(params=["postgresql", "sqlite"])
def store(
    request: pytest.FixtureRequest, sessions: sessionmaker[Session], tmp_path: Path
) -> Iterator[tuple[sessionmaker[Session], Account]]:
    """The shared PostgreSQL store, or a fresh embedded SQLite one (usage is written by one
    upsert on the first, by a locked read and an update on the second)."""
    if request.param == "postgresql":
        yield sessions, make_account(sessions)
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    local = make_sessionmaker(engine)
    yield local, make_account(local)
    engine.dispose()


def test_levels_come_first_then_first_in_first_out(
    sessions: sessionmaker[Session], account: Account
) -> None:
    low = submit(sessions, account, 2, "LOW")
    medium = submit(sessions, account, 2, "MEDIUM")
    high = submit(sessions, account, 2, "HIGH")
    for policy in (StrictPriority(), FairShare(half_life_s=3600)):
        assert order(sessions, policy, 6, utcnow()) == [*high, *medium, *low]
        with sessions.begin() as session:  # put them back for the next policy
            session.execute(update(Job).values(dispatched_at=None, attempt=0))


def test_two_projects_of_equal_weight_alternate_and_two_to_one_weights_get_two_to_one(
    store: tuple[sessionmaker[Session], Account],
) -> None:
    sessions, account = store
    other = make_account(sessions)
    mine, theirs = set(submit(sessions, account, 60)), set(submit(sessions, other, 60))
    policy = FairShare(half_life_s=3600)
    first = order(sessions, policy, 40, utcnow())
    counts = Counter("a" if j in mine else "b" for j in first)
    assert counts == {"a": 20, "b": 20}
    assert [j in mine for j in first] == [i % 2 == 0 for i in range(40)]  # a, b, a, b...
    # When project a weighs 2 and b 1 (usage equal so far), a gets twice b's share
    with sessions.begin() as session:
        projects.configure(session, account.project_id, weight=2.0)
        session.execute(update(Job).values(dispatched_at=None, attempt=0))
    taken = order(sessions, policy, 30, utcnow())
    counts = Counter("a" if j in mine else "b" for j in taken)
    assert counts == {"a": 20, "b": 10}
    assert {j for j in taken if j not in mine} <= theirs


def test_the_project_that_used_the_device_less_recently_goes_first(
    store: tuple[sessionmaker[Session], Account],
) -> None:
    sessions, account = store
    other = make_account(sessions)
    now = utcnow()
    heavy = submit(sessions, account, 3)
    light = submit(sessions, other, 3)
    # Given project a ran 1000 s on the device a moment ago, project b 100 s
    finish(sessions, heavy[:1], 1000, now)
    finish(sessions, light[:1], 100, now)
    policy = FairShare(half_life_s=3600)
    # Then b's jobs go first until their run time catches up (1 s each, expected)
    assert order(sessions, policy, 2, now) == light[1:]
    # And a day later, with a 1-hour half-life, usage has faded: they alternate again
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id.in_(light[1:])).values(dispatched_at=None))
        usage = session.get(ProjectUsage, (account.project_id, DEVICE))
        assert usage is not None and usage.jobs == 1 and usage.run_s == 1000
    later = order(sessions, policy, 4, now + 24 * HOUR)
    assert set(later) == {*heavy[1:], *light[1:]}


def test_a_running_cap_holds_a_project_back(
    sessions: sessionmaker[Session], account: Account
) -> None:
    other = make_account(sessions)
    capped = submit(sessions, account, 5)
    free = submit(sessions, other, 5)
    with sessions.begin() as session:
        projects.configure(session, account.project_id, max_running_per_device=1)
    for policy in (StrictPriority(), FairShare(half_life_s=3600)):
        taken = order(sessions, policy, 6, utcnow())
        assert len([j for j in taken if j in capped]) == 1
        assert len([j for j in taken if j in free]) == 5
        with sessions.begin() as session:
            session.execute(update(Job).values(dispatched_at=None, attempt=0))


def test_a_low_job_is_served_above_a_stream_of_high_jobs_once_aged(
    sessions: sessionmaker[Session], account: Account
) -> None:
    aging = {QueuePriority.LOW: 60.0, QueuePriority.MEDIUM: 60.0}
    now = utcnow()
    low = submit(sessions, account, 1, "LOW", created=now - timedelta(seconds=90))
    high = submit(sessions, account, 3, "HIGH", created=now - timedelta(seconds=10))
    for policy in (StrictPriority(aging), FairShare(3600, aging)):
        # 90 s: one level up (MEDIUM) only: the HIGH jobs still go first
        assert order(sessions, policy, 4, now) == [*high, *low]
        with sessions.begin() as session:
            session.execute(update(Job).values(dispatched_at=None, attempt=0))
        # 121 s: LOW -> MEDIUM -> HIGH, and the oldest of its level
        assert order(sessions, policy, 4, now + timedelta(seconds=31)) == [*low, *high]
        with sessions.begin() as session:
            session.execute(update(Job).values(dispatched_at=None, attempt=0))


def test_the_order_read_without_locks_is_the_order_dispatched(
    sessions: sessionmaker[Session], account: Account
) -> None:
    other = make_account(sessions)
    submit(sessions, account, 7)
    submit(sessions, other, 5, "HIGH")
    submit(sessions, account, 3, "LOW")
    policy = FairShare(half_life_s=3600)
    now = utcnow()
    with sessions() as session:
        read = [r.id for r in policy.pick(session, DEVICE, 100, now, lock=False)]
    assert read == order(sessions, policy, 100, now)


def test_usage_decays_with_its_half_life_between_writes(
    store: tuple[sessionmaker[Session], Account],
) -> None:
    sessions, account = store
    jobs = submit(sessions, account, 2)
    # Given a project that ran 1000 s, a day (one default half-life) ago
    finish(sessions, jobs[:1], 1000, utcnow())
    with sessions.begin() as session:
        usage = session.get(ProjectUsage, (account.project_id, DEVICE))
        assert usage is not None and usage.decayed_run_s == pytest.approx(1000)
        usage.decayed_at -= 24 * HOUR
    # When it runs 100 s more
    finish(sessions, jobs[1:], 100, utcnow())
    # Then its recent usage is half the old plus the new; its totals are plain sums
    with sessions() as session:
        usage = session.get(ProjectUsage, (account.project_id, DEVICE))
        assert usage is not None
        assert usage.decayed_run_s == pytest.approx(600, rel=1e-3)
        assert (usage.jobs, usage.run_s) == (2, pytest.approx(1100))
        assert abs((utcnow() - usage.decayed_at).total_seconds()) < 60


def test_a_new_device_s_run_time_is_learned_from_its_first_jobs(tmp_path: Path) -> None:
    # Given a fresh store (no job ever ran on the device) and a clock we move by hand
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    jobs = submit(sessions, make_account(sessions), 30)
    now = [0.0]
    run_times = RunTimes(clock=lambda: now[0])

    def typical() -> float:
        with sessions() as session:
            return run_times.typical(session, DEVICE)

    assert typical() == DEFAULT_RUN_S
    # When its first jobs run 50 ms each, the default gives way within COLD_TTL_S (not
    # MODEL_TTL_S): fair share charges jobs in flight at this rate
    finish(sessions, jobs[:3], 0.05, utcnow())
    assert typical() == DEFAULT_RUN_S  # still cached
    now[0] += COLD_TTL_S
    assert typical() == pytest.approx(0.05)
    # Once it knows MIN_SAMPLES jobs, the model is kept MODEL_TTL_S
    finish(sessions, jobs[3:10], 0.05, utcnow())
    now[0] += COLD_TTL_S
    assert typical() == pytest.approx(0.05)
    finish(sessions, jobs[10:], 2.0, utcnow())
    now[0] += COLD_TTL_S
    assert typical() == pytest.approx(0.05)
    now[0] += MODEL_TTL_S
    assert typical() == pytest.approx(2.0)
    engine.dispose()
