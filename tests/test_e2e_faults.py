"""Broker faults under load, with real processes: a worker whose Redis connections die over
and over (mid-ack included) consumes again or exits and is restarted, and every job ends;
a worker killed mid-job has its job back in the queue within about one lease."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.proxy import CuttableProxy
from tests.sequences import plain

pytestmark = pytest.mark.e2e


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def noop_fleet(pg_url: str, redis_url: str, workdir: Path) -> TestFleet:
    fleet = TestFleet(pg_url, redis_url, workdir)
    fleet.env.update(
        ATOMFLEET_DEVICES='["NOOP"]',
        ATOMFLEET_STALL_AFTER_S="4",
        ATOMFLEET_WORKER_CONCURRENCY="2",
    )
    return fleet


def submit_noop(fleet: TestFleet, user: Account, jobs: int, sleep_s: float) -> dict[str, Any]:
    body = {
        "project_id": user.project_id,
        "device_type": "NOOP",
        "sequence_builder": plain(3),
        "configuration": {"noop_sleep_s": sleep_s},
        "jobs": [{"runs": 7}] * jobs,
    }
    response = fleet.http.post("/api/v1/batches", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def batch_state(fleet: TestFleet, user: Account, batch_id: str) -> dict[str, Any]:
    data = fleet.http.get(f"/api/v2/batches/{batch_id}", headers=user.headers).json()["data"]
    return dict(data)


def test_a_worker_whose_redis_connections_keep_dying_still_finishes_every_job(
    pg_url: str, redis_url: str, tmp_path: Path, user: Account
) -> None:
    # Given a NOOP worker that reaches Redis through a proxy, under a supervisor
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = CuttableProxy(host, int(port))
    fleet = noop_fleet(pg_url, redis_url, tmp_path)
    fleet.start("api", "scheduler")
    worker_env = {**fleet.env, "ATOMFLEET_REDIS_URL": redis_url.replace(port, str(proxy.port))}
    fleet.processes.env = worker_env
    fleet.processes.start("worker-NOOP", "worker", "--device", "NOOP", restart=True)
    fleet.processes.env = fleet.env
    try:
        fleet.wait_ready()
        created = submit_noop(fleet, user, jobs=40, sleep_s=0.15)
        # When every connection of the worker is cut, again and again, while it works
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            time.sleep(0.4)
            proxy.cut()
            fleet.processes.supervise()

        # Then every job still ends DONE, each with its result
        def finished() -> bool:
            fleet.processes.supervise()
            return batch_state(fleet, user, created["id"])["status"] in TERMINAL

        wait_for(finished, 120, "the batch to end", every_s=0.5)
        state = batch_state(fleet, user, created["id"])
        assert state["jobs_count_per_status"] == {"DONE": 40}, state
        assert proxy.cuts >= 25
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()
        proxy.close()


def test_a_killed_worker_s_job_is_back_in_the_queue_within_about_one_lease(
    pg_url: str, redis_url: str, tmp_path: Path, user: Account
) -> None:
    # Given a job running on a NOOP worker (lease 3 s, grace 2 s, reconcile every 1 s here)
    fleet = noop_fleet(pg_url, redis_url, tmp_path)
    fleet.start("api", "scheduler", "worker-NOOP")
    try:
        fleet.wait_ready()
        created = submit_noop(fleet, user, jobs=1, sleep_s=30)
        job_id = created["jobs"][0]["id"]

        def job() -> dict[str, Any]:
            return dict(
                fleet.http.get(f"/api/v2/jobs/{job_id}", headers=user.headers).json()["data"]
            )

        wait_for(lambda: job()["status"] == "RUNNING", 30, "the job to run")
        # When its worker dies (pool and parent)
        fleet.kill("worker-NOOP")
        killed_at = time.monotonic()
        # Then the job goes back to the backlog within lease + grace + a few ticks
        wait_for(lambda: job()["status"] == "PENDING", 30, "the job to be requeued", every_s=0.1)
        assert time.monotonic() - killed_at < 3 + 2 + 4
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()
