"""The SLURM driver on a real single-node SLURM (tests/slurm_cluster.py), driven directly:
submit, poll, result, cancel, time limit, a job the controller forgot, resume after a kill.
Jobs are NOOP jobs (light: `atomfleet slurm-job` imports no emulator); the emulator path
runs in test_slurm_worker.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from core.config import Settings
from core.enums import Backend, DeviceType
from core.errors import DriverError
from core.messages import JobSpec
from core.slurm_config import SbatchOptions, SlurmCluster
from core.slurm_state import SlurmState
from device_drivers.base import JobCanceled, LocalJob
from device_drivers.registry import load_driver
from device_drivers.slurm import Driver
from device_drivers.slurm_client import SlurmClient, parse_sacct, parse_scontrol_job
from device_drivers.slurm_script import sbatch_script, slurm_time
from tests.fleet import wait_for
from tests.sequences import plain
from tests.slurm_cluster import CLUSTER_NAME, run_driver
from tests.slurm_cluster import SlurmCluster as Cluster

ATOMFLEET = str(Path(sys.executable).parent / "atomfleet")


def slurm_settings(
    settings: Settings, cluster: Cluster, tmp_path: Path, **more: object
) -> Settings:
    return settings.model_copy(
        update={
            "slurm_clusters": {
                CLUSTER_NAME: SlurmCluster(slurm_conf=str(cluster.conf), command=[ATOMFLEET])
            },
            "slurm_devices": {DeviceType.NOOP: CLUSTER_NAME},
            "slurm_shared_dir": tmp_path / "shared",
            "slurm_poll_s": 0.3,
            **more,
        }
    )


def noop_spec(sleep_s: float = 0, atoms: int = 3, attempt: int = 1, job_id: str = "") -> JobSpec:
    return JobSpec(
        job_id=job_id or str(uuid.uuid4()),
        batch_id="b",
        attempt=attempt,
        device_type=DeviceType.NOOP,
        sequence=plain(atoms),
        runs=17,
        configuration={"noop_sleep_s": sleep_s} if sleep_s else None,
    )


def slurm_state(cluster: Cluster, job_id: str) -> str:
    return SlurmClient(str(cluster.conf)).show_job(job_id).state  # type: ignore[union-attr]


def test_a_job_runs_on_slurm_and_its_result_comes_back(
    settings: Settings, slurm: Cluster, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Given NOOP routed to the cluster
    config = slurm_settings(settings, slurm, tmp_path)
    driver = load_driver(DeviceType.NOOP, config)
    assert isinstance(driver, Driver) and config.backend(DeviceType.NOOP) == Backend.SLURM
    spec = noop_spec()
    job = LocalJob()
    # When it runs a job
    result = driver.run(spec, job)
    # Then SLURM ran it (once) and its result is the NOOP's
    assert result.counter == {"000": 17}
    ids = slurm.job_ids_named(f"af-{spec.job_id}-1")
    assert len(ids) == 1
    wait_for(lambda: slurm_state(slurm, ids[0]) == "COMPLETED", 30, "SLURM to end it")
    assert job.remote_ids == [f"{CLUSTER_NAME}/{ids[0]}"]
    assert job.remote_details == {"slurm_job_id": ids[0], "slurm_cluster_name": CLUSTER_NAME}
    assert job.started_at is not None
    # and the job is no longer in flight, its files are gone
    state = SlurmState(redis_client, settings.namespace)
    assert state.in_flight(DeviceType.NOOP) == []
    assert state.submission(spec.job_id, 1) is None
    assert not (tmp_path / "shared" / spec.job_id).exists()
    health = state.health(DeviceType.NOOP)
    assert health is not None and health.up


def test_a_failing_job_ends_with_its_own_error(
    settings: Settings, slurm: Cluster, tmp_path: Path
) -> None:
    driver = load_driver(DeviceType.NOOP, slurm_settings(settings, slurm, tmp_path))
    spec = noop_spec().model_copy(update={"sequence": "not json"})
    with pytest.raises(DriverError, match="not a Pulser sequence"):
        driver.run(spec, LocalJob())


def test_a_job_slurm_refuses_ends_in_error_and_counts(
    settings: Settings, slurm: Cluster, tmp_path: Path
) -> None:
    config = slurm_settings(settings, slurm, tmp_path)
    config.slurm_clusters[CLUSTER_NAME] = SlurmCluster(
        slurm_conf=str(slurm.conf), command=[ATOMFLEET], partition="no-such-partition"
    )
    driver = load_driver(DeviceType.NOOP, config)
    assert isinstance(driver, Driver)
    errors = driver.metrics.submit_errors.labels("NOOP")
    before = errors._value.get()
    with pytest.raises(DriverError, match=r"SLURM refused the job: sbatch: .*[Pp]artition"):
        driver.run(noop_spec(), LocalJob())
    assert errors._value.get() == before + 1


def test_cancel_scancels_the_running_job(
    settings: Settings, slurm: Cluster, tmp_path: Path
) -> None:
    driver = load_driver(DeviceType.NOOP, slurm_settings(settings, slurm, tmp_path))
    spec = noop_spec(sleep_s=120)
    job = LocalJob()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            driver.run(spec, job)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    # Given the job running on SLURM
    wait_for(lambda: job.started_at, 60, "the SLURM job to run")
    slurm_id = job.remote_details["slurm_job_id"]
    assert slurm_state(slurm, slurm_id) == "RUNNING"
    # When it is canceled
    job.cancel_requested = True
    thread.join(timeout=10)
    # Then the driver scanceled it and said so
    assert not thread.is_alive() and isinstance(outcome[0], JobCanceled)
    wait_for(lambda: slurm_state(slurm, slurm_id) == "CANCELLED", 5, "SLURM to cancel it")


def test_a_job_over_its_time_limit_ends_in_error(
    settings: Settings, slurm: Cluster, tmp_path: Path
) -> None:
    # SLURM counts --time in whole minutes and checks it about every 30 s: ~60-90 s here.
    config = slurm_settings(
        settings, slurm, tmp_path, device_limits={DeviceType.NOOP: {"time_limit_s": 60}}
    )
    driver = load_driver(DeviceType.NOOP, config)
    with pytest.raises(DriverError, match=r"^time limit exceeded \(60 s\)$"):
        driver.run(noop_spec(sleep_s=600), LocalJob())


def _killed_mid_job(config: Settings, spec: JobSpec, redis_client: redis.Redis) -> str:
    """Run the job in a process killed -9 once SLURM took the job; its SLURM id."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=run_driver, args=(config.model_dump_json(), spec.model_dump_json()))
    proc.start()
    state = SlurmState(redis_client, config.namespace)
    sub = wait_for(lambda: state.submission(spec.job_id, spec.attempt), 60, "the submission")
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=10)
    return sub.slurm_job_id


def test_a_driver_killed_mid_job_is_resumed_without_a_second_submission(
    settings: Settings, slurm: Cluster, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = slurm_settings(settings, slurm, tmp_path)
    spec = noop_spec(sleep_s=3)
    # Given a worker killed -9 once SLURM took the job
    slurm_id = _killed_mid_job(config, spec, redis_client)
    # When the job runs again (a new attempt, another worker)
    job = LocalJob()
    again = spec.model_copy(update={"attempt": 2})
    result = load_driver(DeviceType.NOOP, config).run(again, job)
    # Then it resumed the SLURM job: submitted once in all, the result is its own
    assert result.counter == {"000": 17}
    assert slurm.job_ids_named(f"af-{spec.job_id}-1") == [slurm_id]
    assert slurm.job_ids_named(f"af-{spec.job_id}-2") == []
    assert job.remote_details["slurm_job_id"] == slurm_id


def _forget_every_job(slurm: Cluster) -> None:
    """The controller purges its jobs (as after MinJobAge): restarted on empty state."""
    slurm.stop_controller()
    shutil.rmtree(slurm.root / "state")
    (slurm.root / "state").mkdir()
    slurm.start_controller()
    slurm.wait_idle()


def test_a_finished_job_the_controller_purged_still_reports_its_result(
    settings: Settings, slurm: Cluster, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = slurm_settings(settings, slurm, tmp_path)
    spec = noop_spec(sleep_s=1)
    slurm_id = _killed_mid_job(config, spec, redis_client)
    # Given the job ended while no worker watched, and SLURM purged it since
    directory = tmp_path / "shared" / spec.job_id / "1"
    wait_for(lambda: (directory / "result.json").exists(), 60, "the job to end")
    _forget_every_job(slurm)
    assert SlurmClient(str(slurm.conf)).show_job(slurm_id) is None
    # When a worker resumes it, then its result comes from the shared directory
    result = load_driver(DeviceType.NOOP, config).run(spec, LocalJob())
    assert result.counter == {"000": 17}


def test_a_purged_job_without_a_result_ends_in_error(
    settings: Settings, slurm: Cluster, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = slurm_settings(settings, slurm, tmp_path)
    spec = noop_spec(sleep_s=300)
    _killed_mid_job(config, spec, redis_client)
    # Given a job SLURM forgot (and whose process is gone) that left no result
    slurm.run("scancel", *slurm.run("squeue", "-h", "-o", "%i").split())
    _forget_every_job(slurm)
    # Then it ends in ERROR, saying so
    with pytest.raises(DriverError, match="SLURM no longer knows"):
        load_driver(DeviceType.NOOP, config).run(spec, LocalJob())


# Pure: configuration, the script, the text formats


def test_a_device_routed_to_an_unconfigured_cluster_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match=r"EMU_MPS -> 'hpc'"):
        Settings(slurm_devices={DeviceType.EMU_MPS: "hpc"})
    with pytest.raises(ValidationError, match="cannot run on SLURM: FRESNEL"):
        Settings(
            slurm_devices={DeviceType.FRESNEL: "hpc"},
            slurm_clusters={"hpc": SlurmCluster()},
            qpus={DeviceType.FRESNEL: "http://q"},
        )
    os.environ["ATOMFLEET_SLURM_CLUSTERS"] = json.dumps(
        {"hpc": {"partition": "gpu", "devices": {"EMU_MPS": {"gpus": 1, "mem": "64G"}}}}
    )
    os.environ["ATOMFLEET_SLURM_DEVICES"] = '{"EMU_MPS": "hpc"}'
    try:
        from_env = Settings()
    finally:
        del os.environ["ATOMFLEET_SLURM_CLUSTERS"], os.environ["ATOMFLEET_SLURM_DEVICES"]
    assert from_env.backend(DeviceType.EMU_MPS) == Backend.SLURM
    assert from_env.backend(DeviceType.EMU_SV) == Backend.POD
    assert from_env.slurm_cluster(DeviceType.EMU_MPS)[1].options(DeviceType.EMU_MPS).gpus == 1


def test_the_sbatch_script_of_a_gpu_device() -> None:
    cluster = SlurmCluster(
        partition="gpu",
        command=["/opt/atomfleet/bin/atomfleet"],
        setup=["module load cuda/12.4"],
        devices={
            DeviceType.EMU_MPS: SbatchOptions(
                cpus=8, mem="64G", gpus=2, gpu_type="a100", extra_args=["--account=atoms"]
            )
        },
    )
    limits = Settings(device_limits={DeviceType.EMU_MPS: {"time_limit_s": 7201}}).limits(
        DeviceType.EMU_MPS
    )
    script = sbatch_script(
        cluster, cluster.options(DeviceType.EMU_MPS), limits, "af-j-1", "/shared/j/1"
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    options = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH")]
    assert options == [
        "--job-name=af-j-1",
        "--output=/shared/j/1/slurm.out",
        "--open-mode=append",
        "--time=0-02:01:00",  # 7201 s, rounded up to whole minutes
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=8",
        "--no-requeue",
        "--partition=gpu",
        "--mem=64G",
        "--gres=gpu:a100:2",
        "--account=atoms",
    ]
    assert "module load cuda/12.4" in lines
    assert "CUDA_VISIBLE_DEVICES=" not in script  # a GPU job sees its GPUs
    assert lines[-1] == "exec /opt/atomfleet/bin/atomfleet slurm-job /shared/j/1/spec.json"
    assert slurm_time(6 * 3600) == "0-06:00:00" and slurm_time(50 * 3600) == "2-02:00:00"
    with pytest.raises(ValidationError, match="not a SLURM size"):
        SbatchOptions(mem="lots")


def test_the_text_formats_of_slurm_22_05() -> None:
    # Lines printed by the real 22.05 (infra notes and this machine).
    line = (
        "JobId=1 JobName=wrap UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
        "ExitCode=0:15 RunTime=00:01:27 TimeLimit=00:01:00 Command=(null) WorkDir=/work/a b "
        "StdOut=/tmp/o-1.txt"
    )
    info = parse_scontrol_job(line)
    assert info is not None
    assert (info.job_id, info.state, info.exit_code, info.reason) == (
        "1",
        "TIMEOUT",
        "0:15",
        "TimeLimit",
    )
    assert info.ended and not info.running
    acct = parse_sacct("7|CANCELLED by 0|0:15|local\n7.batch|CANCELLED|0:15|local\n", "7")
    assert acct is not None and (acct.state, acct.cluster) == ("CANCELLED", "local")


def test_status_lists_the_slurm_jobs_in_flight_and_the_controller_s_health(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from atomfleet.slurm_status import slurm_lines
    from core.slurm_state import SlurmSubmission

    config = settings.model_copy(
        update={
            "slurm_clusters": {"hpc": SlurmCluster()},
            "slurm_devices": {DeviceType.EMU_MPS: "hpc"},
        }
    )
    assert slurm_lines(redis_client, settings, [DeviceType.EMU_MPS]) == []  # none routed
    state = SlurmState(redis_client, settings.namespace)
    sub = SlurmSubmission(
        job_id="job-1", attempt=2, slurm_job_id="4711", cluster="hpc", directory="/d", name="n"
    )
    state.record(DeviceType.EMU_MPS, sub, ttl_s=60)
    state.update_state(DeviceType.EMU_MPS, sub, "RUNNING")
    state.set_health(DeviceType.EMU_MPS, up=False, error="Unable to contact slurm controller")
    lines = slurm_lines(redis_client, config, [DeviceType.EMU_MPS])
    text = "\n".join(lines)
    assert "EMU_MPS on hpc: controller DOWN for 0s: Unable to contact slurm controller" in text
    assert "1 in flight" in text
    assert "job job-1 attempt 2: SLURM job 4711 on hpc, RUNNING" in text
    state.forget(DeviceType.EMU_MPS, "job-1", 2)
    assert state.in_flight(DeviceType.EMU_MPS) == [] and state.submission("job-1", 2) is None
