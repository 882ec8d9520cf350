"""Cancel stops work, limits hold, with real processes: a canceled emulation is interrupted
in its worker (which takes its next job at once), a job over its device's time limit ends
ERROR, and an idle open batch ends TIMED_OUT."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.sequences import parametrized_sweep, plain

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("cancel")))
    fleet.env.update(
        ATOMFLEET_DEVICES='["EMU_MPS", "NOOP"]',
        ATOMFLEET_DEVICE_LIMITS=json.dumps({"NOOP": {"time_limit_s": 2}}),
        ATOMFLEET_OPEN_BATCH_TIMEOUT_S="3",
    )
    with fleet.running("api", "scheduler", "worker-EMU_MPS", "worker-NOOP"):
        yield fleet


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def post(fleet: TestFleet, user: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = fleet.http.post(
        "/api/v1/batches", json={"project_id": user.project_id, **body}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def job(fleet: TestFleet, user: Account, job_id: str) -> dict[str, Any]:
    return dict(fleet.http.get(f"/api/v2/jobs/{job_id}", headers=user.headers).json()["data"])


def batch(fleet: TestFleet, user: Account, batch_id: str) -> dict[str, Any]:
    return dict(fleet.http.get(f"/api/v2/batches/{batch_id}", headers=user.headers).json()["data"])


def test_a_canceled_emulation_stops_and_its_worker_takes_the_next_job_at_once(
    fleet: TestFleet, user: Account
) -> None:
    # Given two long emu-mps jobs queued on a single-process worker, the first running
    long = {"omega": 6.0, "duration": 2900}
    created = post(fleet, user, {
        "device_type": "EMU_MPS",
        "sequence_builder": parametrized_sweep(4),
        "jobs": [{"runs": 10, "variables": long}, {"runs": 10, "variables": long}],
    })  # fmt: skip
    first, second = (j["id"] for j in created["jobs"])
    wait_for(lambda: job(fleet, user, first)["progress"] > 0, 60, "the first job to progress")
    worker_pid = fleet.process("worker-EMU_MPS").pid
    # When it is canceled
    canceled_at = time.time()
    response = fleet.http.patch(f"/api/v2/jobs/{first}/cancel", headers=user.headers)
    assert response.status_code == 200
    # Then it is CANCELED with no result, the same worker starts the second job within
    # two seconds of the emulation being interrupted, and finishes it
    assert job(fleet, user, first)["status"] == "CANCELED"
    wait_for(lambda: job(fleet, user, second)["start_timestamp"], 10, "the next job to start")
    started = datetime.fromisoformat(job(fleet, user, second)["start_timestamp"]).timestamp()
    assert started - canceled_at < 4.0
    link = fleet.http.get(f"/api/v1/jobs/{first}/results_link", headers=user.headers)
    assert link.json()["data"]["results_link"] is None
    fleet.http.patch(f"/api/v2/jobs/{second}/cancel", headers=user.headers)
    assert fleet.process("worker-EMU_MPS").pid == worker_pid
    assert fleet.process("worker-EMU_MPS").poll() is None
    assert "interrupting it" in (fleet.processes.log_dir / "worker-EMU_MPS.log").read_text()


def test_a_job_over_its_device_time_limit_ends_in_error_with_the_reason(
    fleet: TestFleet, user: Account
) -> None:
    # Given NOOP's time limit of 2 s here, a job that would take 30 s, then a short one
    slow = post(fleet, user, {
        "device_type": "NOOP", "sequence_builder": plain(2),
        "configuration": {"noop_sleep_s": 30}, "jobs": [{"runs": 5}],
    })  # fmt: skip
    quick = post(fleet, user, {
        "device_type": "NOOP", "sequence_builder": plain(2), "jobs": [{"runs": 5}],
    })  # fmt: skip
    # Then the slow one ends in ERROR, saying why, and the worker runs the next one
    slow_job = slow["jobs"][0]["id"]
    wait_for(lambda: job(fleet, user, slow_job)["status"] in TERMINAL, 20, "the slow job to end")
    state = job(fleet, user, slow_job)
    assert state["status"] == "ERROR"
    assert state["errors"] == ["time limit exceeded (2 s)"]
    wait_for(lambda: batch(fleet, user, quick["id"])["status"] == "DONE", 20, "the next job")


def test_an_open_batch_that_receives_no_job_times_out(fleet: TestFleet, user: Account) -> None:
    # Given an open batch of 6 jobs of 1.5 s each on one NOOP worker, and nothing more
    # arriving for the timeout (3 s here)
    created = post(fleet, user, {
        "device_type": "NOOP", "sequence_builder": plain(2), "open": True,
        "configuration": {"noop_sleep_s": 1.5}, "jobs": [{"runs": 5}] * 6,
    })  # fmt: skip
    # Then it ends TIMED_OUT, closed, its jobs that had not started CANCELED
    wait_for(lambda: batch(fleet, user, created["id"])["status"] == "TIMED_OUT", 20,
             "the batch to time out")  # fmt: skip
    state = batch(fleet, user, created["id"])
    assert state["open"] is False
    counts = state["jobs_count_per_status"]
    assert counts.get("CANCELED", 0) >= 1 and sum(counts.values()) == 6
    # its end is when its last running job ended, not before
    wait_for(lambda: not batch(fleet, user, created["id"])["jobs_count_per_status"].get(
        "RUNNING"), 20, "its running job to end")  # fmt: skip
    state = batch(fleet, user, created["id"])
    assert state["status"] == "TIMED_OUT" and state["end_datetime"] is not None
    added = fleet.http.post(
        f"/api/v2/batches/{created['id']}/jobs", json=[{"runs": 5}], headers=user.headers
    )
    assert added.status_code == 409
