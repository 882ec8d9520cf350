"""End to end: batches over HTTP to a running API, scheduler and real Celery worker processes
on the real emulators; and the fleet survives a killed worker and a scheduler restart."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulser.backend import Results
from sqlalchemy import Engine

from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.sequences import parametrized_sweep

pytestmark = pytest.mark.e2e

EMULATORS = ["EMU_MPS", "EMU_SV", "EMU_FREE"]


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("fleet")))
    with fleet.running("api", "scheduler", *(f"worker-{d}" for d in EMULATORS)):
        yield fleet


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def submit(
    fleet: TestFleet, user: Account, device: str, jobs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    body = {
        "project_id": user.project_id,
        "device_type": device,
        "sequence_builder": extra.pop("sequence", parametrized_sweep(3)),
        "jobs": jobs,
        **extra,
    }
    response = fleet.http.post("/api/v1/batches", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def wait_batch(
    fleet: TestFleet, user: Account, batch_id: str, timeout_s: float = 180
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        data = fleet.http.get(f"/api/v2/batches/{batch_id}", headers=user.headers).json()["data"]
        return data if data["status"] in TERMINAL else None

    try:
        result: dict[str, Any] = wait_for(done, timeout_s, f"batch {batch_id} to end", every_s=0.5)
    except AssertionError:
        print(fleet.logs())
        raise
    return result


def job(fleet: TestFleet, user: Account, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = fleet.http.get(f"/api/v2/jobs/{job_id}", headers=user.headers).json()[
        "data"
    ]
    return data


def result_of(fleet: TestFleet, user: Account, job_id: str) -> dict[str, Any]:
    link = fleet.http.get(f"/api/v1/jobs/{job_id}/results_link", headers=user.headers).json()
    url = link["data"]["results_link"]
    assert url, "a DONE job has a results link"
    downloaded = httpx.get(url, timeout=30)  # no Authorization header: the URL is signed
    assert downloaded.status_code == 200
    payload: dict[str, Any] = downloaded.json()
    return payload


@pytest.mark.parametrize("device", EMULATORS)
def test_a_parametrized_batch_runs_to_done_on_each_emulator(
    fleet: TestFleet, user: Account, device: str
) -> None:
    # Given a parametrized 3-atom sweep and three variable sets
    jobs = [
        {"runs": 30 + 10 * i, "variables": {"omega": 4.0 + i, "duration": 400}} for i in range(3)
    ]
    # When it is submitted over HTTP
    created = submit(fleet, user, device, jobs)
    # Then the batch ends DONE with correct counts per status
    batch = wait_batch(fleet, user, created["id"])
    assert batch["status"] == "DONE"
    assert batch["jobs_count_per_status"] == {"DONE": 3}
    assert batch["start_datetime"] and batch["end_datetime"]
    # And every job is DONE, reached 100 %, and its counts sum to its runs
    for created_job, expected_runs in zip(created["jobs"], [30, 40, 50], strict=True):
        state = job(fleet, user, created_job["id"])
        assert state["status"] == "DONE"
        assert state["progress"] == 100
        assert state["start_timestamp"] and state["end_timestamp"]
        payload = result_of(fleet, user, created_job["id"])
        assert sum(payload["counter"].values()) == expected_runs
        assert all(len(bits) == 3 for bits in payload["counter"])
        results = Results.from_abstract_repr(payload["serialised_results"])
        assert dict(results.final_bitstrings) == payload["counter"]


def test_a_job_the_emulator_rejects_ends_in_error_with_the_reason(
    fleet: TestFleet, user: Account
) -> None:
    # Given a configuration that passes intake but that the worker's emulator rejects
    from emu_sv import SVConfig
    from pulser.backend import BitStrings

    bad = (
        SVConfig(dt=10, observables=[BitStrings(num_shots=5)])
        .to_abstract_repr()
        .replace('"max_krylov_dim": 100', '"max_krylov_dim": 0')
    )
    created = submit(
        fleet,
        user,
        "EMU_SV",
        [{"runs": 5, "variables": {"omega": 5.0, "duration": 300}}],
        backend_configuration=bad,
    )
    batch = wait_batch(fleet, user, created["id"])
    assert batch["status"] == "ERROR"
    state = job(fleet, user, created["jobs"][0]["id"])
    assert state["status"] == "ERROR"
    # (the text is the emulator's own: emu-sv answers a Krylov space of 0 with a bare
    # UnboundLocalError)
    assert state["errors"] and state["errors"][0].strip()


def test_a_job_survives_its_worker_being_killed_mid_run(fleet: TestFleet, user: Account) -> None:
    # Given a long enough emu-mps job that has started running
    seq = parametrized_sweep(4)
    created = submit(
        fleet,
        user,
        "EMU_MPS",
        [{"runs": 20, "variables": {"omega": 6.0, "duration": 2500}}],
        sequence=seq,
    )
    job_id = created["jobs"][0]["id"]
    wait_for(lambda: job(fleet, user, job_id)["status"] == "RUNNING", 60, "the job to run")
    # When its worker (pool and parent) is killed, and a new worker is started
    fleet.kill("worker-EMU_MPS")
    fleet.start("worker-EMU_MPS")
    # Then the job is run again and ends DONE with its result
    batch = wait_batch(fleet, user, created["id"])
    assert batch["status"] == "DONE", job(fleet, user, job_id)
    assert sum(result_of(fleet, user, job_id)["counter"].values()) == 20


def test_accepted_jobs_finish_across_a_scheduler_restart(fleet: TestFleet, user: Account) -> None:
    # Given a batch accepted while the scheduler is down
    fleet.kill("scheduler", signal.SIGTERM)
    jobs = [{"runs": 10, "variables": {"omega": 5.0, "duration": 300}} for _ in range(3)]
    created = submit(fleet, user, "EMU_FREE", jobs)
    # When the scheduler comes back
    fleet.start("scheduler")
    # Then every job runs
    batch = wait_batch(fleet, user, created["id"])
    assert batch["jobs_count_per_status"] == {"DONE": 3}
