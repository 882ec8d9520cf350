"""A real Celery worker process for EMU_MPS routed to a real SLURM cluster: it submits the
job, relays RUNNING, the SLURM ids and the result as the usual events; resumes after a
kill -9 without submitting again; waits through a controller outage. The job messages are
sent as the scheduler sends them (phase 2 runs them through the API and the scheduler)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from pulser import Pulse, Register, Sequence
from pulser.devices import MockDevice

from atomfleet.services import free_port
from core.broker import celery_config
from core.config import Settings
from core.enums import DeviceType, EventKind, QueuePriority
from core.messages import JobEvent, JobSpec
from core.names import RUN_JOB_TASK, RedisKeys, queue_name
from core.slurm_state import SlurmState
from device_drivers.base import LocalJob
from device_drivers.registry import load_driver
from tests.fleet import wait_for
from tests.metrics_support import Scrape
from tests.slurm_cluster import CLUSTER_NAME, SlurmCluster

DEVICE = DeviceType.EMU_MPS
RUNS = 40


def two_atoms_flipped() -> str:
    """Two distant atoms under a π pulse: every shot is `11` (a result with no sampling
    noise, so that the SLURM run and the pod run can be compared exactly)."""
    seq = Sequence(Register.rectangle(1, 2, spacing=30.0, prefix="q"), MockDevice)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(500, math.pi / 0.5, 0.0, 0.0), "ryd")
    seq.measure("ground-rydberg")
    return seq.to_abstract_repr()


class SlurmWorker:
    """`atomfleet worker --device EMU_MPS` routed to the test cluster, and its messages."""

    def __init__(self, settings: Settings, slurm: SlurmCluster, workdir: Path) -> None:
        self.settings = settings
        self.slurm = slurm
        self.workdir = workdir
        self.shared = workdir / "shared"
        self.metrics_port = free_port()
        clusters = {
            CLUSTER_NAME: {
                "slurm_conf": str(slurm.conf),
                "command": [str(Path(sys.executable).parent / "atomfleet")],
                "devices": {DEVICE.value: {"cpus": 1, "mem": "1000M"}},
            }
        }
        self.env = {
            **os.environ,
            "ATOMFLEET_REDIS_URL": settings.redis_url,
            "ATOMFLEET_NAMESPACE": settings.namespace,
            "ATOMFLEET_DATA_DIR": str(workdir),
            "ATOMFLEET_LEASE_TTL_S": "3",
            "ATOMFLEET_PROGRESS_INTERVAL_S": "0.2",
            "ATOMFLEET_METRICS_HOST": "127.0.0.1",
            "ATOMFLEET_SLURM_CLUSTERS": json.dumps(clusters),
            "ATOMFLEET_SLURM_DEVICES": json.dumps({DEVICE.value: CLUSTER_NAME}),
            "ATOMFLEET_SLURM_SHARED_DIR": str(self.shared),
            "ATOMFLEET_SLURM_POLL_S": "0.3",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.keys = RedisKeys(settings.namespace)
        self.app = Celery("test-producer")
        self.app.conf.update(celery_config(settings))

    def start(self) -> None:
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "atomfleet", "worker", "--device", DEVICE.value,
                 "--concurrency", "4", "--metrics-port", str(self.metrics_port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        log.close()

    def kill(self) -> None:
        proc = self.procs[-1]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.app.close()

    def send(self, spec: JobSpec, client: redis.Redis) -> None:
        """As the scheduler dispatches: the current attempt, then the message."""
        client.set(self.keys.current_attempt(spec.job_id), spec.attempt)
        self.app.send_task(
            RUN_JOB_TASK,
            args=[spec.model_dump(mode="json", exclude_none=True)],
            queue=queue_name(DEVICE, QueuePriority.MEDIUM),
        )

    def events(self, client: redis.Redis, job_id: str) -> list[JobEvent]:
        found = [JobEvent.from_fields(f) for _, f in client.xrange(self.keys.events_stream)]
        return [e for e in found if e.job_id == job_id]

    def final(self, client: redis.Redis, job_id: str, timeout_s: float = 120) -> JobEvent:
        def ended() -> JobEvent | None:
            done = [
                e
                for e in self.events(client, job_id)
                if e.kind in (EventKind.DONE, EventKind.ERROR)
            ]
            return done[0] if done else None

        try:
            event: JobEvent = wait_for(ended, timeout_s, f"job {job_id} to end")
        except AssertionError:
            print(self.logs())
            raise
        return event

    def metrics(self) -> Scrape:
        return Scrape(httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text)

    def logs(self) -> str:
        path = self.workdir / "worker.log"
        text = path.read_text(errors="replace")[-4000:] if path.exists() else ""
        return f"--- worker ---\n{text}\n{self.slurm.logs()}"


@pytest.fixture
def worker(settings: Settings, slurm: SlurmCluster, tmp_path: Path) -> Iterator[SlurmWorker]:
    running = SlurmWorker(settings, slurm, tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def job_spec(attempt: int = 1, job_id: str = "") -> JobSpec:
    return JobSpec(
        job_id=job_id or str(uuid.uuid4()),
        batch_id="b",
        attempt=attempt,
        device_type=DEVICE,
        sequence=two_atoms_flipped(),
        runs=RUNS,
    )


def test_an_emu_mps_job_runs_on_slurm_with_the_pod_result(
    worker: SlurmWorker, slurm: SlurmCluster, redis_client: redis.Redis, settings: Settings
) -> None:
    # When the SLURM worker gets an EMU_MPS job
    spec = job_spec()
    worker.send(spec, redis_client)
    final = worker.final(redis_client, spec.job_id)
    # Then it ends DONE with the result a pod worker computes for the same job
    assert final.kind == EventKind.DONE, final.errors
    assert final.result is not None
    pod = load_driver(DEVICE, Settings(), local=True).run(spec, LocalJob())
    assert final.result.counter == pod.counter == {"11": RUNS}
    # and the events said RUNNING, and which SLURM job ran it, as soon as SLURM took it
    events = worker.events(redis_client, spec.job_id)
    ids = slurm.job_ids_named(f"af-{spec.job_id}-1")
    assert len(ids) == 1
    with_ids = [e for e in events if e.slurm_job_id]
    assert [(e.kind, e.slurm_job_id, e.slurm_cluster_name, e.remote_id) for e in with_ids] == [
        (EventKind.PROGRESS, ids[0], CLUSTER_NAME, f"{CLUSTER_NAME}/{ids[0]}")
    ]
    assert EventKind.RUNNING in [e.kind for e in events]
    # and the worker exports its SLURM metrics
    scrape = worker.metrics()
    assert scrape.value("atomfleet_slurm_controller_up", device_type=DEVICE.value) == 1
    assert scrape.value("atomfleet_slurm_jobs_queued", device_type=DEVICE.value) == 0
    assert scrape.value("atomfleet_slurm_submit_errors_total", device_type=DEVICE.value) == 0
    assert SlurmState(redis_client, settings.namespace).in_flight(DEVICE) == []


def test_a_worker_killed_mid_job_is_resumed_and_slurm_gets_the_job_once(
    worker: SlurmWorker, slurm: SlurmCluster, redis_client: redis.Redis, settings: Settings
) -> None:
    state = SlurmState(redis_client, settings.namespace)
    spec = job_spec()
    worker.send(spec, redis_client)
    # Given the worker killed -9 once SLURM took the job
    wait_for(lambda: state.submission(spec.job_id, 1), 60, "the submission")
    assert [s.job_id for s in state.in_flight(DEVICE)] == [spec.job_id]
    worker.kill()
    # When a worker starts again and the job is dispatched again (its lease lapsed)
    wait_for(lambda: not redis_client.exists(worker.keys.lease(spec.job_id)), 30, "the lease")
    worker.start()
    worker.send(spec.model_copy(update={"attempt": 2}), redis_client)
    # Then the new attempt resumes the SLURM job: submitted once, and DONE
    final = worker.final(redis_client, spec.job_id)
    assert (final.kind, final.attempt) == (EventKind.DONE, 2), final.errors
    assert final.result is not None and final.result.counter == {"11": RUNS}
    assert len(slurm.job_ids_named(f"af-{spec.job_id}-1")) == 1
    assert slurm.job_ids_named(f"af-{spec.job_id}-2") == []


def test_a_controller_down_for_20_s_makes_jobs_wait_then_finish(
    worker: SlurmWorker, slurm: SlurmCluster, redis_client: redis.Redis, settings: Settings
) -> None:
    state = SlurmState(redis_client, settings.namespace)
    wait_for(lambda: scrape_or_none(worker), 60, "the worker's metrics")
    # Given the SLURM controller stopped, and a job for the device
    slurm.stop_controller()
    stopped_at = time.monotonic()
    spec = job_spec()
    worker.send(spec, redis_client)
    # Then the device is DOWN (its health in Redis, its metric)
    health = wait_for(
        lambda: (h := state.health(DEVICE)) is not None and not h.up and h, 40, "health DOWN"
    )
    assert "Unable to contact slurm controller" in health.error
    wait_for(lambda: scrape_or_none(worker, up=0), 20, "controller_up 0")
    # and for 20 s the job waits: PENDING (no event at all), never ERROR
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped_at)))
    assert worker.events(redis_client, spec.job_id) == []
    # When the controller is back, the job is submitted (once), runs and ends DONE
    slurm.start_controller()
    final = worker.final(redis_client, spec.job_id)
    assert final.kind == EventKind.DONE, final.errors
    health = state.health(DEVICE)
    assert health is not None and health.up
    assert len(slurm.job_ids_named(f"af-{spec.job_id}-1")) == 1


def scrape_or_none(worker: SlurmWorker, up: int | None = None) -> Scrape | None:
    """The worker's metrics (with the controller_up gauge at `up`, if given), else None."""
    try:
        scrape = worker.metrics()
    except httpx.HTTPError:
        return None
    if (
        up is not None
        and scrape.value("atomfleet_slurm_controller_up", device_type=DEVICE.value) != up
    ):
        return None
    return scrape
