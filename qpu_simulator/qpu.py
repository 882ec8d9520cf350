"""The simulated QPU: its own FIFO queue, one job running at a time, an UP/DOWN switch.

Everything here runs on the server's event loop (no locks needed); the only work done
elsewhere is sequence validation (a thread, milliseconds) and emulation (a process).
A job runs for at least nb_run / shot_rate_hz seconds, its emulation included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from pulser.devices import Device

from qpu_simulator.emulator import EmulatorWorker
from qpu_simulator.errors import (
    CannotCancelError,
    EmulationError,
    JobNotFoundError,
    QPUDownError,
)
from qpu_simulator.faults import Faults
from qpu_simulator.jobs import Job, move
from qpu_simulator.protocol import JobStatus, OperationalStatus
from qpu_simulator.validation import validated_sequence

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters for tests and operators; `max_concurrent_running` must never exceed 1."""

    jobs_received: int = 0
    jobs_run: int = 0  # jobs that started executing
    jobs_done: int = 0
    jobs_error: int = 0
    jobs_canceled: int = 0
    max_concurrent_running: int = 0


class SimulatedQPU:
    def __init__(self, device: Device, shot_rate_hz: float, emulator: EmulatorWorker) -> None:
        self.initial_device = device
        self.device = device
        self.shot_rate_hz = shot_rate_hz
        self.operational = OperationalStatus.UP
        self.faults = Faults()
        self.stats = Stats()
        self.rng = random.Random()
        self._emulator = emulator
        self._jobs: dict[int, Job] = {}
        self._queue: deque[Job] = deque()
        self._next_uid = 1
        self._wake = asyncio.Event()
        self._running = 0
        self._execution: asyncio.Task[None] | None = None
        self._executor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._emulator.start()
        self._executor = asyncio.create_task(self._execute_forever(), name="qpu-executor")

    async def stop(self) -> None:
        tasks = [t for t in (self._execution, self._executor) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._emulator.stop()

    # The API

    async def submit(self, nb_run: int, pulser_sequence: str, context: dict[str, Any]) -> Job:
        """Validate and queue a job; refused while the QPU is DOWN."""
        self._refuse_if_down()
        sequence = await asyncio.to_thread(validated_sequence, nb_run, pulser_sequence, self.device)
        self._refuse_if_down()  # it may have gone DOWN while the sequence was checked
        job = Job(uid=self._next_uid, nb_run=nb_run, sequence=sequence, context=context)
        self._next_uid += 1
        self._jobs[job.uid] = job
        self._queue.append(job)
        self.stats.jobs_received += 1
        self._wake.set()
        return job

    def job(self, uid: int) -> Job:
        try:
            return self._jobs[uid]
        except KeyError:
            raise JobNotFoundError(uid) from None

    def cancel(self, uid: int) -> Job:
        """Cancel a PENDING or RUNNING job (a running emulation is killed)."""
        job = self.job(uid)
        was_running = job.status == JobStatus.RUNNING
        if not move(job, JobStatus.CANCELED):
            raise CannotCancelError(uid, job.status)
        self.stats.jobs_canceled += 1
        if was_running and self._execution is not None:
            self._execution.cancel()
        return job

    # Control

    def set_operational(self, status: OperationalStatus) -> None:
        self.operational = status
        self._wake.set()

    def reset(self) -> None:
        """Back to a fresh QPU (UP, no faults, initial specs, zero counters); every active
        job is canceled. Uids keep growing, so that an old uid never names a new job."""
        for job in list(self._jobs.values()):
            if not job.status.is_terminal:
                self.cancel(job.uid)
        self._queue.clear()
        self.device = self.initial_device
        self.faults = Faults()
        self.stats = Stats()
        self.set_operational(OperationalStatus.UP)

    # Execution

    def _refuse_if_down(self) -> None:
        if self.operational == OperationalStatus.DOWN:
            raise QPUDownError()

    async def _execute_forever(self) -> None:
        while True:
            job = await self._next_job()
            self._execution = asyncio.create_task(self._execute(job), name=f"qpu-job-{job.uid}")
            # `wait`, not `await`: a canceled job must not stop this loop.
            await asyncio.wait([self._execution])
            self._execution = None

    async def _next_job(self) -> Job:
        """The oldest PENDING job, once the QPU is UP."""
        while True:
            if self.operational == OperationalStatus.UP:
                while self._queue:
                    job = self._queue.popleft()
                    if job.status == JobStatus.PENDING:
                        return job
            self._wake.clear()
            await self._wake.wait()

    async def _execute(self, job: Job) -> None:
        if not move(job, JobStatus.RUNNING):
            return
        self.stats.jobs_run += 1
        self._running += 1
        self.stats.max_concurrent_running = max(self.stats.max_concurrent_running, self._running)
        try:
            status, result = await self._outcome(job)
            if move(job, status, result):
                if status == JobStatus.DONE:
                    self.stats.jobs_done += 1
                else:
                    self.stats.jobs_error += 1
        finally:
            self._running -= 1

    async def _outcome(self, job: Job) -> tuple[JobStatus, str | None]:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + job.nb_run / self.shot_rate_hz
        try:
            counter = await self._emulator.run(job.sequence, job.nb_run)
        except EmulationError as exc:
            log.warning("job %s ends in ERROR: %s", job.uid, exc)
            return JobStatus.ERROR, None
        await asyncio.sleep(max(0.0, ends_at - loop.time()))
        if self.faults.job_fails(self.rng):
            log.warning("job %s ends in ERROR: fault injected", job.uid)
            return JobStatus.ERROR, None
        # As the real QPU answers it (Pulser-myQLM reads `json.loads(result)["counter"]`).
        return JobStatus.DONE, json.dumps({"counter": counter})
