"""A device whose jobs run on a SLURM cluster: submit, poll, relay, clean up (issue 17).

Like the QPU adapter, a remote driver on an I/O-bound (threads) pool:

- The job is written to its attempt's directory in the shared directory
  (`slurm_files`), and `sbatch --parsable` submits a script that runs
  `atomfleet slurm-job spec.json` on a compute node: the same driver code a worker runs.
- The SLURM job id is recorded in Redis (keyed by job and attempt, `core.slurm_state`)
  before any wait, and published as the job's remote id with `slurm_job_id` and
  `slurm_cluster_name`. A new worker running the same job (its worker was killed) resumes
  polling that id; a submission whose reply was lost is found by its unique job name.
  The same attempt is never submitted twice.
- Polls `scontrol -o show job` every `slurm_poll_s`, falling back to `sacct -P` once the
  controller purged a finished job; the job's own files (progress.json, result.json,
  error.json) are the authority on its progress and outcome.
- Cancel: `scancel`, then JobCanceled. TIMEOUT: ERROR "time limit exceeded"; OUT_OF_MEMORY:
  ERROR with SLURM's state and reason; NODE_FAIL (BOOT_FAIL, PREEMPTED): submitted again, up
  to `max_attempts` submissions in all. A controller that does not answer never ends the
  job: it waits (PENDING, or RUNNING if it ran), and the device's health says DOWN.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import ClassVar

import redis

from core.config import Settings
from core.enums import DeviceType
from core.errors import DriverError
from core.messages import JobResult, JobSpec
from core.redis_client import redis_client
from core.slurm_state import SlurmState, SlurmSubmission
from device_drivers.base import DeviceDriver, JobCanceled, JobContext
from device_drivers.slurm_client import SlurmClient, SlurmError, SlurmJobInfo, SlurmUnreachable
from device_drivers.slurm_files import AttemptDir, write_atomic
from device_drivers.slurm_metrics import SlurmMetrics
from device_drivers.slurm_script import job_name, sbatch_script

log = logging.getLogger(__name__)

CHECK_S = 0.2  # how often the cancel flag and the result file are looked at
RETRIED_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})
TIME_STATES = frozenset({"TIMEOUT", "DEADLINE"})


class _Resubmit(Exception):
    """The node failed under the job: submit it again."""


def job_file(spec: JobSpec, settings: Settings) -> str:
    """spec.json: the job and its device's limits (the compute node applies the worker's)."""
    limits = {
        k: v
        for k, v in dataclasses.asdict(settings.limits(spec.device_type)).items()
        if v is not None
    }
    return json.dumps({"spec": spec.model_dump(mode="json"), "limits": limits})


class Driver(DeviceDriver):
    announces_start: ClassVar[bool] = True

    def __init__(self, device_type: DeviceType, settings: Settings) -> None:
        super().__init__(device_type, settings)
        self.cluster_name, self.cluster = settings.slurm_cluster(device_type)
        self.options = self.cluster.options(device_type)
        self.client = SlurmClient(self.cluster.slurm_conf)
        self.metrics = SlurmMetrics(device_type)
        self._state: SlurmState | None = None
        self._pid = 0

    @property
    def state(self) -> SlurmState:
        if self._state is None or self._pid != os.getpid():
            client = redis_client(self.settings.redis_url, socket_timeout=30)
            self._state = SlurmState(client, self.settings.namespace)
            self._pid = os.getpid()
        return self._state

    def run(self, spec: JobSpec, job: JobContext) -> JobResult:
        sub = self._resume(spec, job)
        resubmission = sub.resubmission if sub else 0
        try:
            while True:
                if sub is None:
                    sub = self._submit(spec, job, resubmission)
                try:
                    return self._follow(spec, job, sub)
                except _Resubmit as exc:
                    AttemptDir(self._path(sub)).remove()
                    resubmission += 1
                    if resubmission >= self.settings.max_attempts:
                        raise DriverError(
                            f"{exc}; submitted {resubmission} times, the most allowed"
                        ) from None
                    log.warning("job %s: %s, submitting it again", spec.job_id, exc)
                    sub = None
        except (DriverError, JobCanceled):
            self._done(spec, sub)
            raise
        finally:
            self._publish_queued()

    # Submission

    def _resume(self, spec: JobSpec, job: JobContext) -> SlurmSubmission | None:
        """The submission a worker made for this job before (it was killed), if any."""
        sub = self.state.latest_submission(spec.job_id, spec.attempt)
        if sub is None:
            name = job_name(spec.job_id, spec.attempt)
            ids = self._ask(lambda: self.client.find_by_name(name), job)
            if not ids:
                return None
            directory = AttemptDir.of(self.settings.slurm_shared_dir, spec.job_id, spec.attempt)
            sub = SlurmSubmission(
                job_id=spec.job_id,
                attempt=spec.attempt,
                slurm_job_id=ids[-1],
                cluster=self.cluster_name,
                directory=str(directory.path),
                name=name,
            )
            self.state.record(self.device_type, sub, self._ttl_s)
        log.info("job %s: resuming SLURM job %s", spec.job_id, sub.slurm_job_id)
        self._announce(sub, job)
        return sub

    @property
    def _ttl_s(self) -> int:
        return self.settings.job_time_limit_s * 4

    def _submit(self, spec: JobSpec, job: JobContext, resubmission: int) -> SlurmSubmission:
        files = AttemptDir.of(
            self.settings.slurm_shared_dir, spec.job_id, spec.attempt, resubmission
        )
        files.create()
        write_atomic(files.spec, job_file(spec, self.settings))
        name = job_name(spec.job_id, spec.attempt, resubmission)
        script = sbatch_script(
            self.cluster, self.options, self.limits, name, str(files.path.resolve())
        )
        write_atomic(files.script, script)
        files.script.chmod(0o750)
        while True:
            if job.canceled():
                files.remove()
                raise JobCanceled("canceled before SLURM took it")
            try:
                # A submission whose reply was lost is there under its name: never twice.
                ids = self.client.find_by_name(name)
                slurm_id = (
                    ids[-1] if ids else self.client.submit(str(files.script), str(files.path))[0]
                )
                self._health(up=True)
                break
            except SlurmUnreachable as exc:
                self.metrics.submit_failed()
                self._health(up=False, error=str(exc))
                self._sleep(self.settings.slurm_poll_s, job)
            except SlurmError as exc:
                self.metrics.submit_failed()
                files.remove()
                raise DriverError(f"SLURM refused the job: {exc}") from exc
        sub = SlurmSubmission(
            job_id=spec.job_id,
            attempt=spec.attempt,
            slurm_job_id=slurm_id,
            cluster=self.cluster_name,
            directory=str(files.path),
            name=name,
            state="PENDING",
            resubmission=resubmission,
        )
        self.state.record(self.device_type, sub, self._ttl_s)  # before any wait
        self._announce(sub, job)
        return sub

    def _announce(self, sub: SlurmSubmission, job: JobContext) -> None:
        job.remember(sub.remote_id, slurm_job_id=sub.slurm_job_id, slurm_cluster_name=sub.cluster)
        self._publish_queued()

    # Following it

    def _follow(self, spec: JobSpec, job: JobContext, sub: SlurmSubmission) -> JobResult:
        files = AttemptDir(self._path(sub))
        polled_at = 0.0
        started = False
        while True:
            if job.canceled():
                self._ask(lambda: self.client.cancel(sub.slurm_job_id), job, cancellable=False)
                raise JobCanceled(f"SLURM job {sub.slurm_job_id} canceled")
            result = files.result()
            if result is not None:
                self._done(spec, sub)
                return result
            if time.monotonic() - polled_at >= self.settings.slurm_poll_s:
                polled_at = time.monotonic()
                progress = files.progress()
                if progress is not None:
                    if not started:
                        started = True
                        job.started()
                    job.progress(progress)
                info = self._poll(sub)
                if info is not None:
                    self.state.update_state(self.device_type, sub, info.state)
                    self._publish_queued()
                    if info.running and not started:
                        started = True
                        job.started()
                    if info.ended:
                        return self._ended(spec, sub, files, info)
            time.sleep(CHECK_S)

    def _poll(self, sub: SlurmSubmission) -> SlurmJobInfo | None:
        """SLURM's view of the job; None while the controller does not answer. A job the
        controller forgot is looked up in accounting, else reported as LOST."""
        try:
            info = self.client.show_job(sub.slurm_job_id)
        except SlurmUnreachable as exc:
            self._health(up=False, error=str(exc))
            return None
        self._health(up=True)
        if info is None:
            info = self.client.accounting(sub.slurm_job_id) or SlurmJobInfo(
                sub.slurm_job_id, "LOST"
            )
        return info

    def _ended(
        self, spec: JobSpec, sub: SlurmSubmission, files: AttemptDir, info: SlurmJobInfo
    ) -> JobResult:
        result = files.result()  # written just before the job ended
        if result is not None:
            self._done(spec, sub)
            return result
        error = files.error()
        what = f"SLURM job {sub.slurm_job_id}"
        if info.state in TIME_STATES:
            raise DriverError(f"time limit exceeded ({self.limits.time_limit_s} s)")
        if info.state == "OUT_OF_MEMORY":
            reason = info.reason if info.reason not in ("", "None") else "OutOfMemory"
            raise DriverError(f"out of memory: {what} ended OUT_OF_MEMORY ({reason})")
        if info.state in RETRIED_STATES:
            raise _Resubmit(f"{what} ended {info.state} ({info.reason or 'node failure'})")
        if error is not None:
            raise DriverError(error)
        if info.state == "CANCELLED":
            raise DriverError(f"{what} was cancelled outside atomfleet")
        if info.state == "LOST":
            raise DriverError(f"SLURM no longer knows {what} and it left no result")
        tail = files.output_tail()
        detail = f" (exit {info.exit_code}, {info.reason})" if info.exit_code else ""
        raise DriverError(
            f"{what} ended {info.state}{detail} without a result" + (f": {tail}" if tail else "")
        )

    def _path(self, sub: SlurmSubmission) -> Path:
        return Path(sub.directory)

    def _done(self, spec: JobSpec, sub: SlurmSubmission | None) -> None:
        """The job ended: no longer in flight; its files go."""
        self.state.forget(self.device_type, spec.job_id, spec.attempt)
        if sub is not None:
            AttemptDir(self._path(sub)).remove()

    # Controller health

    def _ask(self, call, job: JobContext, cancellable: bool = True):  # type: ignore[no-untyped-def]
        """`call()`, waiting (health DOWN) while the controller does not answer."""
        while True:
            try:
                answer = call()
                self._health(up=True)
                return answer
            except SlurmUnreachable as exc:
                self._health(up=False, error=str(exc))
                self._sleep(self.settings.slurm_poll_s, job if cancellable else None)
            except SlurmError as exc:
                raise DriverError(str(exc)) from exc

    def _health(self, up: bool, error: str = "") -> None:
        self.metrics.set_up(up)
        try:
            self.state.set_health(self.device_type, up, error)
        except redis.RedisError:  # the next poll says it again
            log.warning("could not publish the SLURM health of %s", self.device_type.value)
        if not up:
            log.warning("SLURM controller of %s does not answer: %s", self.device_type.value, error)

    def _publish_queued(self) -> None:
        try:
            queued = sum(1 for s in self.state.in_flight(self.device_type) if s.state == "PENDING")
        except redis.RedisError:
            return
        self.metrics.set_queued(queued)

    def _sleep(self, seconds: float, job: JobContext | None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if job is not None and job.canceled():
                raise JobCanceled("canceled while SLURM did not answer")
            time.sleep(CHECK_S)
