"""The simulated QPU, as a QPU client sees it: a real server process, a real emulator (emu-sv).

One server serves the module (reset before each test); the token test starts its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from pulser.json.abstract_repr.deserializer import deserialize_device

from atomfleet.services import free_port
from core.qpu_api import QpuClient, QpuUnreachable
from tests.sequences import parametrized_sweep, plain

ROOT = Path(__file__).resolve().parent.parent
SHOT_RATE_HZ = 200.0
TERMINAL = {"DONE", "ERROR", "CANCELED"}

pytestmark = pytest.mark.timeout(120)


class SimulatorProcess:
    """`python -m qpu_simulator` on a free port, stopped with SIGTERM as an operator would."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qpu_simulator", "--port", str(self.port),
             "--shot-rate-hz", str(SHOT_RATE_HZ), "--log-level", "warning", *extra],
            cwd=ROOT, env=env,
        )  # fmt: skip
        wait_for(self._answers, 30, "the simulator to answer")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, "the simulator exited"
        try:
            return httpx.get(f"{self.url}/control/stats", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    server = SimulatorProcess()
    yield server
    server.stop()


@pytest.fixture
def qpu(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    """A client of a fresh QPU: UP, healthy, initial specs, zero counters, nothing active."""
    with httpx.Client(base_url=simulator.url, timeout=10) as client:
        assert client.post("/control/reset").status_code == 200
        yield client


@pytest.fixture(scope="module")
def sequence() -> str:
    """A built adiabatic sweep on 3 atoms of a square-lattice layout (AnalogDevice)."""
    return str(
        Sequence.from_abstract_repr(parametrized_sweep(3))
        .build(omega=5.0, duration=500)
        .to_abstract_repr()
    )


def submit(qpu: httpx.Client, nb_run: int, sequence: str) -> dict[str, Any]:
    body = {"nb_run": nb_run, "pulser_sequence": sequence, "context": {"batch_id": "b-1"}}
    response = qpu.post("/api/v1/jobs", json=body)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["data"]
    return job


def job_of(qpu: httpx.Client, uid: int) -> dict[str, Any]:
    response = qpu.get(f"/api/v1/jobs/{uid}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["data"]
    return job


def wait_status(qpu: httpx.Client, uid: int, statuses: set[str], timeout_s: float = 20) -> Any:
    return wait_for(
        lambda: (job := job_of(qpu, uid))["status"] in statuses and job,
        timeout_s,
        f"job {uid} to be {statuses}",
    )


def without_layout() -> str:
    """A valid sequence whose register has no layout, on AnalogDevice minus that rule."""
    device = dataclasses.replace(AnalogDevice, requires_layout=False)
    seq = Sequence(Register.rectangle(1, 3, spacing=6.0, prefix="q"), device)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(300, 5.0, 0.0, 0.0), "ryd")
    return str(seq.to_abstract_repr())


def at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def test_the_specs_are_pulser_s_fresnel_device_with_2000_runs(qpu: httpx.Client) -> None:
    # Given a simulator started with its default device
    # When a client reads the system's specs and its operational status
    system = qpu.get("/api/v1/system").json()
    operational = qpu.get("/api/v1/system/operational").json()
    # Then both come in a success envelope, and the specs are a real Pulser device
    assert (system["code"], system["status"], system["message"]) == (200, "success", "OK.")
    device = deserialize_device(json.dumps(system["data"]["specs"]))
    assert device.name == "FRESNEL"
    assert device.max_runs == 2000
    assert device.requires_layout
    assert operational["data"] == {"operational_status": "UP"}


def test_a_built_sequence_runs_to_done_with_counts_from_the_emulator(
    qpu: httpx.Client, sequence: str
) -> None:
    # Given a built 3-atom sequence on a layout-based register
    # When it is submitted for 200 shots
    job = submit(qpu, 200, sequence)
    assert job["status"] == "PENDING" and isinstance(job["uid"], int)
    assert job["batch_id"] == "b-1"
    # Then it runs to DONE, for at least nb_run / shot rate seconds
    done = wait_status(qpu, job["uid"], TERMINAL)
    assert done["status"] == "DONE"
    elapsed = (at(done["end_datetime"]) - at(done["start_datetime"])).total_seconds()
    assert elapsed >= 200 / SHOT_RATE_HZ - 0.05
    # And its result holds a counter of 3-bit strings summing to nb_run
    counter = json.loads(done["result"])["counter"]
    assert sum(counter.values()) == 200
    assert all(len(bits) == 3 and set(bits) <= {"0", "1"} for bits in counter)
    # And the sweep excites atoms: not every shot is all-ground
    assert counter.get("000", 0) < 200


def test_two_jobs_submitted_together_never_run_at_once(qpu: httpx.Client, sequence: str) -> None:
    # Given two jobs submitted back to back
    first = submit(qpu, 100, sequence)
    second = submit(qpu, 100, sequence)
    # When the first runs, the second waits
    wait_status(qpu, first["uid"], {"RUNNING"} | TERMINAL)
    if job_of(qpu, first["uid"])["status"] == "RUNNING":
        assert job_of(qpu, second["uid"])["status"] == "PENDING"
    # Then both end DONE, the second started after the first ended
    first_done = wait_status(qpu, first["uid"], TERMINAL)
    second_done = wait_status(qpu, second["uid"], TERMINAL)
    assert first_done["status"] == second_done["status"] == "DONE"
    assert at(second_done["start_datetime"]) >= at(first_done["end_datetime"])
    stats = qpu.get("/control/stats").json()
    assert stats["jobs_received"] == 2 and stats["jobs_run"] == 2
    assert stats["max_concurrent_running"] == 1


def test_a_queued_job_stays_pending_while_the_qpu_is_down_and_runs_once_it_is_up(
    qpu: httpx.Client, sequence: str
) -> None:
    # Given a running job and one queued behind it
    running = submit(qpu, 200, sequence)
    queued = submit(qpu, 50, sequence)
    wait_status(qpu, running["uid"], {"RUNNING"})
    # When the QPU goes DOWN
    assert qpu.post("/control/operational", json={"operational_status": "DOWN"}).status_code == 200
    # Then the running job finishes, the queued one does not start
    assert wait_status(qpu, running["uid"], TERMINAL)["status"] == "DONE"
    time.sleep(0.5)
    assert job_of(qpu, queued["uid"])["status"] == "PENDING"
    assert qpu.get("/api/v1/system/operational").json()["data"]["operational_status"] == "DOWN"
    # And new submissions are refused with a retryable 503
    refused = qpu.post("/api/v1/jobs", json={"nb_run": 10, "pulser_sequence": sequence})
    assert refused.status_code == 503 and refused.json()["status"] == "error"
    # When the QPU is UP again, the queued job runs
    qpu.post("/control/operational", json={"operational_status": "UP"})
    assert wait_status(qpu, queued["uid"], TERMINAL)["status"] == "DONE"


def test_injected_errors_answer_503_until_the_qpu_is_healed(qpu: httpx.Client) -> None:
    # Given every /api/v1 request set to fail
    assert qpu.post("/control/faults", json={"error_rate": 1.0}).status_code == 200
    # When a client asks for the operational status, it gets a 503 error envelope
    failed = qpu.get("/api/v1/system/operational")
    assert failed.status_code == 503
    assert failed.json()["status"] == "error" and failed.json()["code"] == "503"
    # When the faults are cleared and a latency set, answers come back, late
    qpu.post("/control/faults", json={"error_rate": 0.0, "latency_s": 0.3})
    started = time.monotonic()
    assert qpu.get("/api/v1/system/operational").status_code == 200
    assert time.monotonic() - started >= 0.3
    # And invalid fault settings are refused
    assert qpu.post("/control/faults", json={"error_rate": 1.5}).status_code == 422
    assert qpu.post("/control/faults", json={"latency_s": -1}).status_code == 422


def test_a_running_job_can_be_canceled_and_an_ended_one_cannot(
    qpu: httpx.Client, sequence: str
) -> None:
    # Given a long job running (2000 shots: 10 s)
    long = submit(qpu, 2000, sequence)
    wait_status(qpu, long["uid"], {"RUNNING"})
    # When it is canceled, the answer is 200 with the job CANCELED, and it stays so
    canceled = qpu.put(f"/api/v1/jobs/{long['uid']}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["data"]["status"] == "CANCELED"
    time.sleep(0.2)
    assert job_of(qpu, long["uid"])["status"] == "CANCELED"
    assert job_of(qpu, long["uid"])["result"] is None
    # Then the QPU runs the next job (its emulator was restarted)
    short = submit(qpu, 20, sequence)
    assert wait_status(qpu, short["uid"], TERMINAL, timeout_s=30)["status"] == "DONE"
    # And a cancel of an ended job is refused as the real QPU refuses it
    refused = qpu.put(f"/api/v1/jobs/{short['uid']}/cancel")
    assert refused.status_code == 400
    body = refused.json()
    assert "3003" in body["code"] and body["status"] == "fail"
    assert body["data"]["status"] == "DONE"
    assert qpu.get("/control/stats").json()["jobs_canceled"] == 1


def test_invalid_submissions_are_refused_with_400_naming_the_problem(
    qpu: httpx.Client, sequence: str
) -> None:
    def refusal(body: dict[str, Any]) -> str:
        response = qpu.post("/api/v1/jobs", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["status"] == "fail"
        message: str = response.json()["message"]
        return message

    # Given invalid submissions, then each is refused with what was wrong and where
    assert "parametrized" in refusal({"nb_run": 10, "pulser_sequence": parametrized_sweep(3)})
    assert "max_runs of 2000" in refusal({"nb_run": 2001, "pulser_sequence": sequence})
    assert "nb_run" in refusal({"nb_run": 0, "pulser_sequence": sequence})
    assert "not a valid Pulser" in refusal({"nb_run": 10, "pulser_sequence": "garbage"})
    assert "pulser_sequence" in refusal({"nb_run": 10})
    not_json = qpu.post(
        "/api/v1/jobs", content=b"{nb_run", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["status"] == "fail"
    # A sequence for another device (MockDevice, a register without a layout)
    assert "cannot run on FRESNEL" in refusal({"nb_run": 10, "pulser_sequence": plain(3)})
    # A register without a layout, on a device otherwise FRESNEL's (the mimic-QPU check)
    assert "RegisterLayout" in refusal({"nb_run": 10, "pulser_sequence": without_layout()})
    # When a calibration lowers max_runs, the new limit applies at once
    specs = qpu.post("/control/specs", json={"max_runs": 100}).json()["specs"]
    assert specs["max_runs"] == 100
    assert "max_runs of 100" in refusal({"nb_run": 150, "pulser_sequence": sequence})
    assert qpu.get("/api/v1/system").json()["data"]["specs"]["max_runs"] == 100
    # And nothing was queued, and an unknown job is a 404
    assert qpu.get("/control/stats").json()["jobs_received"] == 0
    missing = qpu.get("/api/v1/jobs/987654")
    assert missing.status_code == 404 and missing.json()["status"] == "fail"


def test_a_job_whose_execution_fails_ends_in_error(qpu: httpx.Client, sequence: str) -> None:
    # Given a QPU whose executed jobs fail
    qpu.post("/control/faults", json={"job_error_rate": 1.0})
    # When a job runs, then it ends in ERROR without a result
    job = wait_status(qpu, submit(qpu, 20, sequence)["uid"], TERMINAL)
    assert job["status"] == "ERROR" and job["result"] is None
    assert qpu.get("/control/stats").json()["jobs_error"] == 1


def test_a_token_is_required_on_the_api_when_configured() -> None:
    # Given a simulator started with a token
    server = SimulatorProcess("--token", "s3cret")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            # When a client calls without it, or with another, it gets 401
            assert client.get("/api/v1/system/operational").status_code == 401
            wrong = client.get("/api/v1/system", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["code"] == "401"
            # Then with the token it is served
            good = client.get(
                "/api/v1/system/operational", headers={"Authorization": "Bearer s3cret"}
            )
            assert good.status_code == 200
    finally:
        server.stop()


def test_an_emulation_that_fails_raises_and_the_emulator_serves_the_next_one(
    sequence: str,
) -> None:
    # Given the emulator process the QPU runs its jobs in
    import asyncio

    from qpu_simulator.emulator import EmulatorWorker
    from qpu_simulator.errors import EmulationError

    async def scenario() -> dict[str, int]:
        worker = EmulatorWorker()
        try:
            # When it is given something emu-sv cannot run, the failure comes back as such
            with pytest.raises(EmulationError, match="Error"):
                await worker.run("not a sequence", 10)
            # Then the same process still emulates the next job
            return await worker.run(sequence, 30)
        finally:
            worker.stop()

    assert sum(asyncio.run(scenario()).values()) == 30


def test_the_qpu_client_backs_off_then_gives_up_and_never_resubmits_blindly(
    qpu: httpx.Client, simulator: SimulatorProcess, sequence: str
) -> None:
    # Given a QPU answering 503 to everything
    assert qpu.post("/control/faults", json={"error_rate": 1.0}).status_code == 200
    pauses: list[float] = []
    with contextlib.closing(
        QpuClient(simulator.url, retries=5, retry_s=0.01, sleep=pauses.append)
    ) as client:
        # When a client reads its status, it retries with pauses doubling, then gives up
        with pytest.raises(QpuUnreachable, match="HTTP 503 after 5 attempts"):
            client.operational()
        assert pauses == [0.01, 0.02, 0.04, 0.08]
        # And a submission (503: certainly not taken) is retried the same way, never run
        pauses.clear()
        with pytest.raises(QpuUnreachable):
            client.submit(10, sequence, {"batch_id": "b-1"})
        assert pauses == [0.01, 0.02, 0.04, 0.08]
        assert qpu.get("/control/stats").json()["jobs_received"] == 0
        # And the pauses stop growing at 8 x retry_s; a longer Retry-After is honoured
        assert [client.pause_s(n) for n in (1, 4, 5, 9)] == [0.01, 0.08, 0.08, 0.08]
        assert client.pause_s(1, "3") == 3.0 and client.pause_s(1, "3600") == 30.0
