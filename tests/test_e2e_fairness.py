"""A shared fleet, with real processes: equal projects alternate, weights are honoured, a
running cap holds, an aged LOW job beats a stream of HIGH ones, a quota answers 429, and
queue positions are exact on one worker."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from scheduler import projects
from scheduler.db import make_sessionmaker
from scheduler.models import Batch
from tests.conftest import Account, make_account
from tests.fleet import TestFleet, wait_for
from tests.sequences import plain

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("fair")))
    fleet.env.update(
        ATOMFLEET_DEVICES='["NOOP"]',
        ATOMFLEET_AGING_S=json.dumps({"LOW": 2, "MEDIUM": 2}),
    )
    with fleet.running("api", "scheduler"):
        yield fleet


@pytest.fixture
def worker(fleet: TestFleet) -> Iterator[Any]:
    """Starts a NOOP worker (concurrency given) when called; stops it after the test."""
    started: list[str] = []

    def start(concurrency: int = 1) -> None:
        name = f"worker-NOOP-{len(started)}"
        fleet.processes.start(name, "worker", "--device", "NOOP",
                              "--concurrency", str(concurrency))  # fmt: skip
        started.append(name)

    yield start
    for name in started:
        fleet.kill(name, signal.SIGTERM)


@pytest.fixture
def accounts(fleet: TestFleet, pg_engine: Engine) -> Iterator[tuple[Account, Account]]:
    """Two fresh projects; what they leave waiting is canceled after the test, so that a later
    test's queue holds only its own jobs."""
    sessions = make_sessionmaker(pg_engine)
    pair = make_account(sessions), make_account(sessions)
    yield pair
    for user in pair:
        with sessions() as session:
            ids = session.scalars(select(Batch.id).where(Batch.project_id == user.project_id))
            batch_ids = list(ids)
        if batch_ids:
            response = fleet.http.patch(
                "/api/v1/batches/cancel", json={"batch_ids": batch_ids}, headers=user.headers
            )
            assert response.status_code == 200, response.text


def submit(fleet: TestFleet, user: Account, jobs: int, **extra: Any) -> dict[str, Any]:
    sleep_s = extra.pop("sleep_s", 0.05)
    body = {
        "project_id": user.project_id,
        "device_type": "NOOP",
        "sequence_builder": plain(2),
        "configuration": {"noop_sleep_s": sleep_s},
        "jobs": [{"runs": 3}] * jobs,
        **extra,
    }
    response = fleet.http.post("/api/v1/batches", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def jobs_of(fleet: TestFleet, user: Account, batch_id: str) -> list[dict[str, Any]]:
    response = fleet.http.get(
        "/api/v2/jobs", params={"batch_id": batch_id, "limit": 100}, headers=user.headers
    )
    return list(response.json()["data"])


def started_order(fleet: TestFleet, users: list[tuple[Account, str]]) -> list[str]:
    """Which user's job started, in start order, over the given batches."""
    starts = []
    for i, (user, batch_id) in enumerate(users):
        for job in jobs_of(fleet, user, batch_id):
            assert job["start_timestamp"], job
            starts.append((job["start_timestamp"], "ab"[i]))
    return [who for _, who in sorted(starts)]


def done(fleet: TestFleet, user: Account, batch_id: str) -> bool:
    state = fleet.http.get(f"/api/v2/batches/{batch_id}", headers=user.headers).json()["data"]
    return bool(state["status"] == "DONE")


def set_project(pg_engine: Engine, project_id: str, **settings: Any) -> None:
    with make_sessionmaker(pg_engine).begin() as session:
        projects.configure(session, project_id, **settings)


def test_two_equal_projects_are_served_in_alternation(
    fleet: TestFleet, worker: Any, accounts: tuple[Account, Account]
) -> None:
    # Given 60 queued jobs from each of two projects of equal weight
    a, b = accounts
    batch_a, batch_b = submit(fleet, a, 60), submit(fleet, b, 60)
    # When one worker runs them
    worker(1)
    wait_for(lambda: done(fleet, a, batch_a["id"]) and done(fleet, b, batch_b["id"]), 120,
             "both batches to end", every_s=0.5)  # fmt: skip
    # Then over the first 40 started, each got its half (within 10%)
    first = Counter(started_order(fleet, [(a, batch_a["id"]), (b, batch_b["id"])])[:40])
    assert abs(first["a"] - first["b"]) <= 4, first


def test_weights_two_to_one_get_two_to_one(
    fleet: TestFleet, worker: Any, accounts: tuple[Account, Account], pg_engine: Engine
) -> None:
    a, b = accounts
    set_project(pg_engine, a.project_id, weight=2.0)
    batch_a, batch_b = submit(fleet, a, 60), submit(fleet, b, 60)
    worker(1)
    wait_for(lambda: done(fleet, a, batch_a["id"]) and done(fleet, b, batch_b["id"]), 120,
             "both batches to end", every_s=0.5)  # fmt: skip
    order = started_order(fleet, [(a, batch_a["id"]), (b, batch_b["id"])])
    first = Counter(order[:45])
    assert abs(first["a"] / first["b"] - 2.0) <= 0.3, "".join(order)


def test_a_running_cap_of_one_is_never_exceeded(
    fleet: TestFleet, worker: Any, accounts: tuple[Account, Account], pg_engine: Engine
) -> None:
    a, _ = accounts
    set_project(pg_engine, a.project_id, max_running_per_device=1)
    created = submit(fleet, a, 8, sleep_s=0.3)
    worker(3)  # room for three at once
    wait_for(lambda: done(fleet, a, created["id"]), 60, "the batch to end", every_s=0.5)
    spans = sorted(
        (datetime.fromisoformat(j["start_timestamp"]), datetime.fromisoformat(j["end_timestamp"]))
        for j in jobs_of(fleet, a, created["id"])
    )
    for (_, end), (start, _) in pairwise(spans):
        assert start >= end, "two jobs of the capped project ran at once"


def test_a_low_job_under_a_stream_of_high_jobs_starts_within_its_aging(
    fleet: TestFleet, worker: Any, accounts: tuple[Account, Account]
) -> None:
    # Given one worker busy with a stream of HIGH jobs, and a LOW job (aging: 2 s per level)
    a, b = accounts
    submit(fleet, b, 10, queue_priority="HIGH", sleep_s=0.2)
    worker(1)
    low = submit(fleet, a, 1, queue_priority="LOW", sleep_s=0.05)
    submitted = time.time()
    low_job = low["jobs"][0]["id"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # keep HIGH jobs coming
        submit(fleet, b, 2, queue_priority="HIGH", sleep_s=0.2)
        state = fleet.http.get(f"/api/v2/jobs/{low_job}", headers=a.headers).json()["data"]
        if state["start_timestamp"]:
            break
        time.sleep(0.3)
    state = fleet.http.get(f"/api/v2/jobs/{low_job}", headers=a.headers).json()["data"]
    # Then it started within LOW -> MEDIUM -> HIGH (4 s), a job's length and a dispatch
    assert state["start_timestamp"], "the LOW job starved"
    waited = datetime.fromisoformat(state["start_timestamp"]).timestamp() - submitted
    assert waited < 4 + 0.2 + 2.0, waited


def test_a_submission_over_the_waiting_quota_is_a_429_and_writes_nothing(
    fleet: TestFleet, accounts: tuple[Account, Account], pg_engine: Engine
) -> None:
    a, _ = accounts
    set_project(pg_engine, a.project_id, max_waiting_jobs=5, max_jobs_per_batch=4)
    body = {"project_id": a.project_id, "device_type": "NOOP", "sequence_builder": plain(2)}

    def count_batches() -> int:
        with make_sessionmaker(pg_engine)() as session:
            query = select(func.count()).select_from(Batch).where(Batch.project_id == a.project_id)
            return int(session.scalar(query) or 0)

    first = fleet.http.post("/api/v1/batches", json={**body, "jobs": [{"runs": 1}] * 4},
                            headers=a.headers)  # fmt: skip
    assert first.status_code == 200
    too_big = fleet.http.post("/api/v1/batches", json={**body, "jobs": [{"runs": 1}] * 5},
                              headers=a.headers)  # fmt: skip
    assert too_big.status_code == 429
    assert "quota of 4 jobs per batch" in too_big.text
    too_many = fleet.http.post("/api/v1/batches", json={**body, "jobs": [{"runs": 1}] * 2},
                               headers=a.headers)  # fmt: skip
    assert too_many.status_code == 429
    assert "quota of 5 waiting jobs (4 are waiting)" in too_many.text
    assert too_many.headers["Retry-After"] == "60"
    # a rebatch is a submission too: its 4 jobs would make 8 waiting
    rebatch = fleet.http.post(f"/api/v1/batches/{first.json()['data']['id']}/rebatch",
                              headers=a.headers)  # fmt: skip
    assert rebatch.status_code == 429, rebatch.text
    assert "quota of 5 waiting jobs (4 are waiting)" in rebatch.text
    assert count_batches() == 1


def test_queue_positions_are_exact_on_one_worker(
    fleet: TestFleet, worker: Any, accounts: tuple[Account, Account]
) -> None:
    # Given one worker that ran a job (the run-time model has a sample), busy with a long
    # job, then LOW jobs and a HIGH one queued behind it
    a, _ = accounts
    worker(1)
    first = submit(fleet, a, 1, sleep_s=0.2)
    wait_for(lambda: done(fleet, a, first["id"]), 20, "a first job to run")
    busy = submit(fleet, a, 1, sleep_s=3)
    busy_job = busy["jobs"][0]["id"]
    wait_for(lambda: jobs_of(fleet, a, busy["id"])[0]["status"] == "RUNNING", 20, "it to run")
    queued = submit(fleet, a, 4, queue_priority="LOW")
    later = submit(fleet, a, 1, queue_priority="HIGH")
    time.sleep(0.5)
    waiting = [(a, queued["id"]), (a, later["id"])]
    position = {j["id"]: j for _, b in waiting for j in jobs_of(fleet, a, b)}
    # Then the positions are 0, 1, 2, ... and the HIGH job is ahead of the LOW ones not yet
    # handed to Redis; the running job has none
    assert sorted(j["queue_position"] for j in position.values()) == [0, 1, 2, 3, 4]
    high = position[later["jobs"][0]["id"]]["queue_position"]
    lows = [position[j["id"]]["queue_position"] for j in queued["jobs"]]
    assert lows == sorted(lows) and high <= 1
    running = fleet.http.get(f"/api/v2/jobs/{busy_job}", headers=a.headers).json()["data"]
    assert running["queue_position"] is None
    assert running["estimated_start_time"] is None
    # And each waiting job has a start estimate (one slot: after the busy job and the jobs
    # ahead), later for a later position, and ends after it starts
    by_position = sorted(position.values(), key=lambda j: j["queue_position"])
    starts = [datetime.fromisoformat(j["estimated_start_time"]) for j in by_position]
    ends = [datetime.fromisoformat(j["estimated_end_time"]) for j in by_position]
    assert starts == sorted(starts) and starts[0] < starts[-1]
    assert all(start < end for start, end in zip(starts, ends, strict=True))
    # And the jobs then start exactly in that order
    wait_for(lambda: done(fleet, a, queued["id"]) and done(fleet, a, later["id"]), 30,
             "the queue to drain", every_s=0.5)  # fmt: skip
    started = sorted(
        (j["start_timestamp"], j["id"]) for _, b in waiting for j in jobs_of(fleet, a, b)
    )
    assert [position[job_id]["queue_position"] for _, job_id in started] == [0, 1, 2, 3, 4]
