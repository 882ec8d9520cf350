"""Results retention on the real store: the results and own sequences of jobs that ended long
ago are deleted in small transactions, their rows kept; recent and unfinished jobs untouched;
the API answers 410 for a deleted result; the scheduler's loop counts what it deletes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from core.enums import DeviceType, EventKind, JobStatus
from core.metrics import new_registry
from scheduler.intake import Caller, Intake
from scheduler.metrics import SchedulerMetrics
from scheduler.models import Batch, Job, Result, utcnow
from scheduler.retention import ResultsRetention
from scheduler.service import retention_loop, run_loop
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.fleet import wait_for
from tests.metrics_support import Scrape, report, submit
from tests.sequences import plain

DAYS = 30


@pytest.fixture
def kept(settings: Settings) -> Settings:
    """Results kept 30 days, purged two jobs a transaction."""
    return settings.model_copy(
        update={"results_retention_days": DAYS, "results_purge_batch_rows": 2}
    )


def own_sequence_jobs(sessions: sessionmaker[Session], account: Account, n: int) -> list[str]:
    """Jobs that each carry their own sequence (a per-job payload in the store)."""
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type=DeviceType.EMU_SV,
        jobs=[{"runs": 5, "sequence": plain(3)}] * n,
    )
    with sessions.begin() as session:
        submission = Intake(Settings()).create_batch(session, request, Caller(account.user_id))
        return [row["id"] for row in submission.jobs]


def end(
    sessions: sessionmaker[Session], job_id: str, days_ago: float, kind: EventKind = EventKind.DONE
) -> None:
    """End the job as a worker would (a result when DONE), `days_ago` days ago."""
    report(sessions, job_id, kind, **({"errors": ["boom"]} if kind == EventKind.ERROR else {}))
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(end_timestamp=utcnow() - timedelta(days=days_ago))
        )


def state(sessions: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {
            "status": job.status,
            "purged": job.results_purged_at is not None,
            "sequence": job.sequence is not None,
            "result": session.get(Result, job_id) is not None,
        }


def test_old_ended_jobs_lose_their_results_and_sequences_recent_and_unfinished_ones_do_not(
    kept: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given jobs that ended 40 days ago (DONE with results, ERROR; with their own sequence),
    # jobs that ended 5 days ago, and jobs still PENDING or RUNNING from 40 days ago
    old_done = own_sequence_jobs(sessions, account, 3)
    old_error, recent, running, pending = (submit(sessions, account, DeviceType.EMU_MPS, "LOW", 2)
                                           for _ in range(4))  # fmt: skip
    for i, job in enumerate(old_done):
        end(sessions, job, days_ago=40 + i)
    for job in old_error:
        end(sessions, job, days_ago=45, kind=EventKind.ERROR)
    for job in recent:
        end(sessions, job, days_ago=5)
    for job in running:
        report(sessions, job, EventKind.RUNNING)
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(running + pending))
            .values(created_at=utcnow() - timedelta(days=40))
        )
        batches_before = [(b.id, b.counts()) for b in session.scalars(select(Batch))]
    # When the retention runs, transaction by transaction
    retention = ResultsRetention(kept, sessions)
    now = utcnow()
    rounds = [retention.purge_batch(retention.cutoff(now), now) for _ in range(4)]
    # Then each transaction took at most two jobs, the oldest ends first, until none was left
    assert [(r.jobs, r.results) for r in rounds] == [(2, 0), (2, 2), (1, 1), (0, 0)]
    # and the old jobs lost their results and own sequences, and are marked
    for job in old_done:
        assert state(sessions, job) == {
            "status": JobStatus.DONE, "purged": True, "sequence": False, "result": False
        }  # fmt: skip
    for job in old_error:
        assert state(sessions, job)["purged"] and state(sessions, job)["status"] == JobStatus.ERROR
    # while recent and unfinished jobs kept everything
    for job in recent:
        assert state(sessions, job) == {
            "status": JobStatus.DONE, "purged": False, "sequence": False, "result": True
        }  # fmt: skip
    for job in running + pending:
        assert not state(sessions, job)["purged"]
    # and no row went: every job and batch, and the batches' counts, are as they were
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 11
        assert [(b.id, b.counts()) for b in session.scalars(select(Batch))] == batches_before


def test_a_turn_purges_transaction_by_transaction_and_reports_each(
    kept: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given five DONE jobs that ended 31 to 35 days ago
    jobs = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 5)
    for i, job in enumerate(jobs):
        end(sessions, job, days_ago=31 + i)
    # When one turn runs
    committed: list[int] = []
    retention = ResultsRetention(kept, sessions, committed.append)
    deleted = retention.purge_once()
    # Then it deleted them all, two per transaction, each reported once committed
    assert deleted == 5
    assert committed == [2, 2, 1]
    # and the next turn finds nothing to read again
    assert retention.purge_once() == 0


def test_a_job_another_transaction_holds_is_skipped_not_waited_for(
    kept: Settings, sessions: sessionmaker[Session], account: Account, pg_engine: Engine
) -> None:
    # Given three old DONE jobs, one of them locked by another transaction
    jobs = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 3)
    for job in jobs:
        end(sessions, job, days_ago=40)
    retention = ResultsRetention(kept, sessions)
    with pg_engine.connect() as other, other.begin():
        other.execute(select(Job.id).where(Job.id == jobs[0]).with_for_update())
        # When the retention runs meanwhile
        deleted = retention.purge_once()
        # Then it purged the two others without waiting for the lock
        assert deleted == 2
        assert not state(sessions, jobs[0])["purged"]
    # and the held one on its next turn
    assert retention.purge_once() == 1
    assert state(sessions, jobs[0])["purged"]


def test_retention_is_off_by_default(
    settings: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given a job that ended ten years ago, and the default settings
    [job] = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 1)
    end(sessions, job, days_ago=3650)
    assert Settings().results_retention_days == 0
    # Then the scheduler runs no retention loop, and a purge deletes nothing
    assert retention_loop(settings, sessions, SchedulerMetrics(new_registry(), [])) is None
    assert ResultsRetention(settings, sessions).purge_once() == 0
    assert state(sessions, job)["result"]


def test_the_scheduler_loop_counts_purged_results_and_times_its_turns(
    kept: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given three old DONE jobs and one old ERROR job (it has no result to count)
    jobs = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 4)
    for job in jobs[:3]:
        end(sessions, job, days_ago=40)
    end(sessions, jobs[3], days_ago=40, kind=EventKind.ERROR)
    metrics = SchedulerMetrics(new_registry(), [DeviceType.EMU_SV])
    loop = retention_loop(kept, sessions, metrics)
    assert loop is not None and loop.name == "retention"

    def scrape() -> Scrape:
        return Scrape(generate_latest(metrics.registry).decode())

    assert scrape().value("atomfleet_results_purged_total") == 0
    # When the scheduler's loop turns once
    stop = threading.Event()
    thread = threading.Thread(target=run_loop, args=(loop, stop, None, metrics), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: scrape().value("atomfleet_scheduler_retention_duration_seconds_count") == 1,
            30,
            "a retention turn",
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    # Then the metric counts the three deleted results
    assert scrape().value("atomfleet_results_purged_total") == 3


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def client(kept: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(kept)) as c:
        yield c


def test_a_purged_result_answers_410_saying_why_and_the_job_stays_listed(
    kept: Settings, sessions: sessionmaker[Session], account: Account, client: TestClient
) -> None:
    # Given a batch whose DONE and ERROR jobs ended 40 days ago, and a link handed out before
    done, error = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 2)
    end(sessions, done, days_ago=40)
    end(sessions, error, days_ago=40, kind=EventKind.ERROR)
    headers = account.headers
    link = client.get(f"/api/v1/jobs/{done}/results_link", headers=headers).json()["data"]
    assert client.get(link["results_link"]).status_code == 200
    # When the retention purges them
    assert ResultsRetention(kept, sessions).purge_once() == 1
    # Then the results link answers 410 Gone, with a message saying what happened
    gone = client.get(f"/api/v1/jobs/{done}/results_link", headers=headers)
    assert gone.status_code == 410
    [message] = gone.json()["data"]["description"]
    assert f"job {done}" in message and "deleted" in message and f"{DAYS} days" in message
    # and so does the link handed out before
    download = client.get(link["results_link"])
    assert download.status_code == 410 and "deleted" in download.text
    # while the ERROR job, which never had a result, still has none
    none = client.get(f"/api/v1/jobs/{error}/results_link", headers=headers)
    assert none.status_code == 200 and none.json()["data"] == {"results_link": None}
    # and both jobs are listed and read as before, without a sequence
    with sessions() as session:
        batch_id = session.scalars(select(Job.batch_id).where(Job.id == done)).one()
    listed = client.get(
        "/api/v2/jobs",
        params={"batch_id": batch_id, "order_by": "creation_order", "order_by_direction": "ASC"},
        headers=headers,
    ).json()["data"]
    assert [(j["id"], j["status"], j["runs"]) for j in listed] == [
        (done, "DONE", 10), (error, "ERROR", 10)
    ]  # fmt: skip
    job = client.get(f"/api/v2/jobs/{done}", headers=headers).json()["data"]
    assert job["status"] == "DONE" and job["sequence"] is None
    batch = client.get(f"/api/v2/batches/{batch_id}", headers=headers).json()["data"]
    assert batch["jobs_count_per_status"] == {"DONE": 1, "ERROR": 1}
    assert isinstance(batch["sequence_builder"], str), "pulser reads it before any result"
    # and a rebatch of purged jobs is refused with 410, creating nothing
    batches = client.get("/api/v1/batches", headers=headers).json()["pagination"]["total"]
    rebatch = client.post(f"/api/v1/batches/{batch_id}/rebatch", headers=headers)
    assert rebatch.status_code == 410, rebatch.text
    assert "retention" in rebatch.text
    assert client.get("/api/v1/batches", headers=headers).json()["pagination"]["total"] == batches
