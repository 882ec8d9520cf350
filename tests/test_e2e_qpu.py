"""The FRESNEL QPU behind its driver, proven against the shipped simulated QPU, with real
processes: one job at a time, DOWN and faults survived, a killed worker's job run once,
cancel reaching the QPU."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulser.backend import Results
from sqlalchemy import Engine

from atomfleet.services import free_port
from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.metrics_support import Scrape
from tests.sequences import parametrized_sweep

pytestmark = pytest.mark.e2e

SWEEP = parametrized_sweep(3)


class Qpu:
    """The simulated QPU's control endpoints."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def stats(self) -> dict[str, int]:
        return dict(self.http.get("/control/stats").json())

    def operational(self, status: str) -> None:
        self.http.post("/control/operational", json={"operational_status": status})

    def faults(self, **faults: float) -> None:
        self.http.post("/control/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        self.http.post("/control/reset").raise_for_status()
        self.faults()
        self.operational("UP")


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestFleet, Qpu]]:
    port = free_port()
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("qpu")))
    fleet.env.update(
        ATOMFLEET_SCHEDULER_METRICS_PORT=str(free_port()),
        ATOMFLEET_QPUS=json.dumps({"FRESNEL": f"http://127.0.0.1:{port}"}),
        ATOMFLEET_QPU_POLL_S="0.2",
        ATOMFLEET_QPU_RETRY_S="0.05",
    )
    fleet.processes.start("qpu", "qpu-simulator", "--port", str(port), "--shot-rate-hz", "100")
    qpu = Qpu(port)
    with contextlib.closing(qpu.http), fleet.running("api", "scheduler", "worker-FRESNEL"):
        wait_for(lambda: "FRESNEL" in specs(fleet), 30, "the QPU's specs")
        yield fleet, qpu


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


@pytest.fixture
def qpu(fleet: tuple[TestFleet, Qpu]) -> Qpu:
    fleet[1].reset()
    return fleet[1]


def specs(fleet: TestFleet) -> dict[str, str]:
    public = fleet.http.get("/api/v1/devices/public-specs").json()["data"]
    return {p["device_type"]: p["specs"] for p in public}


def submit(fleet: TestFleet, user: Account, runs: list[int], **extra: Any) -> dict[str, Any]:
    body = {
        "project_id": user.project_id,
        "sequence_builder": SWEEP,
        "device_type": "FRESNEL",
        "jobs": [
            {"runs": r, "variables": {"omega": 4.0 + i, "duration": 300}}
            for i, r in enumerate(runs)
        ],
        **extra,
    }
    response = fleet.http.post("/api/v1/batches", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def batch(fleet: TestFleet, user: Account, batch_id: str) -> dict[str, Any]:
    return dict(fleet.http.get(f"/api/v2/batches/{batch_id}", headers=user.headers).json()["data"])


def job(fleet: TestFleet, user: Account, job_id: str) -> dict[str, Any]:
    return dict(fleet.http.get(f"/api/v2/jobs/{job_id}", headers=user.headers).json()["data"])


def wait_ended(fleet: TestFleet, user: Account, batch_id: str, timeout_s: float = 90) -> None:
    wait_for(lambda: batch(fleet, user, batch_id)["status"] in TERMINAL, timeout_s,
             "the batch to end", every_s=0.3)  # fmt: skip


def result(fleet: TestFleet, user: Account, job_id: str) -> dict[str, Any]:
    link = fleet.http.get(f"/api/v1/jobs/{job_id}/results_link", headers=user.headers)
    return dict(httpx.get(link.json()["data"]["results_link"]).json())


def test_a_parametrized_batch_runs_on_the_qpu_with_counts_summing_to_runs(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    # Given a 3-job sweep sent to FRESNEL (no device_type needed: the sequence's device is
    # moved onto the QPU's specs)
    created = submit(fleet[0], user, [30, 40, 50])
    # When it runs
    wait_ended(fleet[0], user, created["id"])
    # Then every job is DONE, its counts are the QPU's and sum to its runs, its results
    # are a Pulser Results, and the QPU ran each job once
    assert batch(fleet[0], user, created["id"])["jobs_count_per_status"] == {"DONE": 3}
    for job_row, runs in zip(created["jobs"], [30, 40, 50], strict=True):
        payload = result(fleet[0], user, job_row["id"])
        assert sum(payload["counter"].values()) == runs
        assert all(len(bits) == 3 for bits in payload["counter"])
        assert (
            dict(Results.from_abstract_repr(payload["serialised_results"]).final_bitstrings)
            == (payload["counter"])
        )
    assert qpu.stats()["jobs_run"] == 3


def test_two_batches_submitted_together_never_run_two_jobs_on_the_qpu_at_once(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    first = submit(fleet[0], user, [20, 20, 20])
    second = submit(fleet[0], user, [20, 20], queue_priority="HIGH")
    wait_ended(fleet[0], user, first["id"])
    wait_ended(fleet[0], user, second["id"])
    stats = qpu.stats()
    assert stats["max_concurrent_running"] == 1
    assert stats["jobs_received"] == stats["jobs_run"] == 5


def qpu_up(fleet: TestFleet) -> float | None:
    """`atomfleet_qpu_up` for FRESNEL, as Prometheus scrapes the scheduler (None: absent)."""
    port = fleet.env["ATOMFLEET_SCHEDULER_METRICS_PORT"]
    scrape = Scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    if "FRESNEL" not in scrape.label_values("atomfleet_qpu_up", "device_type"):
        return None
    return scrape.value("atomfleet_qpu_up", device_type="FRESNEL")


def test_while_the_qpu_is_down_jobs_wait_pending_then_finish(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    assert qpu_up(fleet[0]) == 1
    # Given the QPU DOWN
    qpu.operational("DOWN")
    wait_for(lambda: device_status(fleet[0], user) == "DOWN", 10, "the device to show DOWN")
    assert qpu_up(fleet[0]) == 0
    # When a batch arrives, its jobs wait PENDING (none ERROR), for as long as it is down
    created = submit(fleet[0], user, [20, 20, 20])
    time.sleep(4)
    state = batch(fleet[0], user, created["id"])
    assert state["status"] == "PENDING"
    assert state["jobs_count_per_status"] == {"PENDING": 3}
    assert qpu.stats()["jobs_run"] == 0
    # And once it is UP again, they all run
    qpu.operational("UP")
    wait_ended(fleet[0], user, created["id"])
    assert batch(fleet[0], user, created["id"])["jobs_count_per_status"] == {"DONE": 3}


def test_a_qpu_answering_thirty_percent_503s_still_runs_every_job_once(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    qpu.faults(error_rate=0.3)
    created = submit(fleet[0], user, [10] * 6)
    wait_ended(fleet[0], user, created["id"], timeout_s=120)
    qpu.faults()
    assert batch(fleet[0], user, created["id"])["jobs_count_per_status"] == {"DONE": 6}
    stats = qpu.stats()
    assert stats["jobs_run"] == stats["jobs_received"] == 6


def test_a_qpu_worker_killed_mid_job_does_not_run_it_twice(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    # Given a long QPU job (600 shots at 100 Hz) that the QPU runs
    created = submit(fleet[0], user, [600])
    job_id = created["jobs"][0]["id"]
    wait_for(lambda: job(fleet[0], user, job_id)["status"] == "RUNNING", 30, "the job to run")
    # When its worker dies and another one starts
    fleet[0].kill("worker-FRESNEL")
    fleet[0].start("worker-FRESNEL")
    # Then the new worker resumes the QPU job: it ends DONE and the QPU ran it once
    wait_ended(fleet[0], user, created["id"], timeout_s=120)
    assert batch(fleet[0], user, created["id"])["jobs_count_per_status"] == {"DONE": 1}
    assert sum(result(fleet[0], user, job_id)["counter"].values()) == 600
    assert qpu.stats()["jobs_received"] == qpu.stats()["jobs_run"] == 1


def test_canceling_a_running_qpu_job_cancels_it_on_the_qpu(
    fleet: tuple[TestFleet, Qpu], qpu: Qpu, user: Account
) -> None:
    created = submit(fleet[0], user, [1000])
    job_id = created["jobs"][0]["id"]
    wait_for(lambda: job(fleet[0], user, job_id)["status"] == "RUNNING", 30, "the job to run")
    canceled = fleet[0].http.patch(f"/api/v2/jobs/{job_id}/cancel", headers=user.headers)
    assert canceled.status_code == 200
    wait_for(lambda: qpu.stats()["jobs_canceled"] == 1, 5, "the QPU to cancel it")
    assert job(fleet[0], user, job_id)["status"] == "CANCELED"


def device_status(fleet: TestFleet, user: Account) -> str:
    devices = fleet.http.get("/api/v1/devices", headers=user.headers).json()["data"]
    return str(next(d["status"] for d in devices if d["device_type"] == "FRESNEL"))
