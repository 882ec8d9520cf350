"""A poison job (its worker process dies each time it runs) ends in ERROR naming the death,
and each death sends it back to the backlog at the scheduler's next reconciliation, not
after its lease lapses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from core.names import RedisKeys
from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.sequences import plain

pytestmark = pytest.mark.e2e

LEASE_TTL_S = 30  # the default: a requeue waiting for the lease would take over 30 s


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, tmp_path_factory.mktemp("poison"))
    fleet.env.update(
        ATOMFLEET_DEVICES='["NOOP"]',
        ATOMFLEET_LEASE_TTL_S=str(LEASE_TTL_S),
        ATOMFLEET_RECONCILE_INTERVAL_S="1",
    )
    with fleet.running("api", "scheduler", "worker-NOOP"):
        yield fleet


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def run_one(fleet: TestFleet, user: Account, configuration: dict[str, Any]) -> dict[str, Any]:
    response = fleet.http.post("/api/v1/batches", headers=user.headers, json={
        "project_id": user.project_id, "device_type": "NOOP", "sequence_builder": plain(2),
        "configuration": configuration, "jobs": [{"runs": 5}],
    })  # fmt: skip
    assert response.status_code == 200, response.text
    job_id = response.json()["data"]["jobs"][0]["id"]

    def ended() -> dict[str, Any] | None:
        state: dict[str, Any] = fleet.http.get(
            f"/api/v2/jobs/{job_id}", headers=user.headers
        ).json()["data"]
        return state if state["status"] in TERMINAL else None

    result: dict[str, Any] = wait_for(ended, 60, "the job to end", every_s=0.2)
    return result


def test_a_job_that_kills_its_worker_ends_in_error_naming_the_signal(
    fleet: TestFleet, user: Account, redis_url: str
) -> None:
    # Given a job whose worker process kills itself with SIGKILL each time it runs it
    started = time.monotonic()
    state = run_one(fleet, user, {"noop_exit": "SIGKILL"})
    took = time.monotonic() - started
    # Then after 3 attempts it ends in ERROR saying how its worker process died
    assert state["status"] == "ERROR"
    assert state["errors"] == ["the worker process running it was killed (SIGKILL), 3 times"]
    # and each death was requeued without waiting for the lease to lapse (3 x 30 s)
    print(f"3 deaths and 2 requeues took {took:.1f} s")
    assert took < LEASE_TTL_S
    deaths = redis.Redis.from_url(redis_url).hgetall(
        RedisKeys(fleet.env["ATOMFLEET_NAMESPACE"]).deaths(state["id"])
    )
    assert sorted(deaths) == [b"1", b"2", b"3"]
    # and the worker, restarted child by child, still runs the next job
    assert run_one(fleet, user, {})["status"] == "DONE"


def test_a_worker_process_that_exits_with_a_code_is_named_by_it(
    fleet: TestFleet, user: Account
) -> None:
    state = run_one(fleet, user, {"noop_exit": 3})
    assert state["status"] == "ERROR"
    assert state["errors"] == ["the worker process running it exited with code 3, 3 times"]
