"""End to end with a fleet per test: workers honour priority, and nothing accepted is lost
when Redis restarts empty."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from atomfleet.services import free_port
from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.sequences import parametrized_sweep

pytestmark = pytest.mark.e2e

VARIABLES = {"omega": 5.0, "duration": 300}


class PrivateRedis:
    """A redis-server of this test alone, keeping nothing on disk, restartable on its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _answers(self.url), 10, "redis-server to answer", every_s=0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


def make_fleet(pg_url: str, redis_url: str, workdir: Path, **env: str) -> TestFleet:
    fleet = TestFleet(pg_url, redis_url, workdir)
    fleet.env.update(env)
    fleet.processes.env = fleet.env
    return fleet


def submit(fleet: TestFleet, user: Account, jobs: int, priority: str = "MEDIUM") -> dict[str, Any]:
    body = {
        "project_id": user.project_id,
        "device_type": "EMU_FREE",
        "queue_priority": priority,
        "sequence_builder": parametrized_sweep(3),
        "jobs": [{"runs": 10, "variables": VARIABLES} for _ in range(jobs)],
    }
    response = fleet.http.post("/api/v1/batches", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def batch_of(fleet: TestFleet, user: Account, batch_id: str) -> dict[str, Any]:
    data: dict[str, Any] = fleet.http.get(
        f"/api/v2/batches/{batch_id}", headers=user.headers
    ).json()["data"]
    return data


def test_a_worker_takes_high_before_medium_before_low(
    pg_url: str, redis_url: str, tmp_path: Path, user: Account
) -> None:
    # Given LOW, MEDIUM then HIGH batches submitted while no scheduler nor worker runs
    fleet = make_fleet(pg_url, redis_url, tmp_path)
    fleet.start("api")
    try:
        fleet.wait_ready()
        batches = {p: submit(fleet, user, 3, p) for p in ("LOW", "MEDIUM", "HIGH")}
        # When the scheduler and one single-process worker start
        fleet.start("scheduler", "worker-EMU_FREE")
        for created in batches.values():
            wait_for(
                lambda c=created: batch_of(fleet, user, c["id"])["status"] in TERMINAL,
                120,
                "the batches to end",
            )
        # Then it ran every HIGH job before any MEDIUM one, and MEDIUM before LOW
        started = {
            p: [fleet.http.get(f"/api/v2/jobs/{j['id']}", headers=user.headers).json()["data"]
                for j in created["jobs"]]
            for p, created in batches.items()
        }  # fmt: skip
        for job_list in started.values():
            assert all(j["status"] == "DONE" for j in job_list)
        first = {p: min(j["start_timestamp"] for j in jobs) for p, jobs in started.items()}
        last = {p: max(j["start_timestamp"] for j in jobs) for p, jobs in started.items()}
        assert last["HIGH"] <= first["MEDIUM"]
        assert last["MEDIUM"] <= first["LOW"]
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()


def test_accepted_jobs_finish_after_redis_restarts_empty(
    pg_url: str, private_redis: PrivateRedis, tmp_path: Path, user: Account
) -> None:
    # Given a fleet whose worker is down, and a batch queued in Redis
    fleet = make_fleet(pg_url, private_redis.url, tmp_path)
    fleet.start("api", "scheduler")
    try:
        fleet.wait_ready()
        created = submit(fleet, user, 3)
        queue = f"{fleet.env['ATOMFLEET_NAMESPACE']}:celery:EMU_FREE.medium"
        client = redis.Redis.from_url(private_redis.url)
        # (with no worker, the dispatcher keeps one message in Redis, the rest in the store)
        wait_for(lambda: client.llen(queue) == 1, 30, "a job to be queued")
        # When Redis dies and comes back with no data, and a worker starts
        private_redis.kill()
        private_redis.start()
        assert client.llen(queue) == 0
        fleet.start("worker-EMU_FREE")
        # Then every accepted job still runs to DONE
        wait_for(
            lambda: batch_of(fleet, user, created["id"])["status"] in TERMINAL,
            120,
            "the batch to end",
            every_s=0.5,
        )
        assert batch_of(fleet, user, created["id"])["jobs_count_per_status"] == {"DONE": 3}
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()
