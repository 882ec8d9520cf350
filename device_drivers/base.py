"""The driver interface every device family implements, and what a running job offers it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Protocol

from core.config import Settings
from core.enums import DeviceType
from core.errors import AtomfleetError
from core.messages import JobResult, JobSpec

ProgressCallback = Callable[[int], None]
"""Receives the job's progress in percent (0-100), as often as the driver knows it."""


class JobCanceled(AtomfleetError):
    """The job was canceled while it ran: the driver stopped it (on the device too)."""


class JobContext(Protocol):
    """What the worker offers a driver about the job it runs."""

    def progress(self, percent: int) -> None:
        """The job's progress in percent, as often as the driver knows it."""

    def started(self) -> None:
        """The device started the job (drivers with `announces_start` say when)."""

    def remember(self, remote_id: str, **details: str) -> None:
        """Record the device's own id of the job, so that a new attempt resumes it;
        `details` (e.g. `slurm_job_id`, `slurm_cluster_name`) go into its PROGRESS event."""

    def recall(self) -> str | None:
        """The device's id an earlier attempt of this job remembered, if any."""

    def canceled(self) -> bool:
        """True once the job was canceled: the driver stops it and raises JobCanceled."""


class DeviceDriver(ABC):
    """Runs one job at a time for one device type.

    Drivers are built once per worker process and reused; heavy imports happen when the
    driver module is imported, never per job.
    """

    # False: the worker reports RUNNING once the job has run a moment (an emulation
    # starts at once); True: the driver calls `job.started()` when the device starts it.
    announces_start: ClassVar[bool] = False

    def __init__(self, device_type: DeviceType, settings: Settings) -> None:
        self.device_type = device_type
        self.settings = settings
        self.limits = settings.limits(device_type)

    @abstractmethod
    def run(self, spec: JobSpec, job: JobContext) -> JobResult:
        """Run `spec` to completion and return its counts and serialized results.

        Raises `core.errors.DriverError` with a readable message when the job cannot run,
        `JobCanceled` when it was canceled meanwhile.
        """


class LocalJob:
    """A JobContext for running a driver outside a worker (tests, a notebook)."""

    def __init__(self, on_progress: ProgressCallback | None = None) -> None:
        self.on_progress = on_progress
        self.started_at: float | None = None
        self.remote_ids: list[str] = []
        self.remote_details: dict[str, str] = {}
        self.cancel_requested = False

    def progress(self, percent: int) -> None:
        if self.on_progress is not None:
            self.on_progress(percent)

    def started(self) -> None:
        self.started_at = self.started_at or time.time()

    def remember(self, remote_id: str, **details: str) -> None:
        self.remote_ids.append(remote_id)
        self.remote_details.update(details)

    def recall(self) -> str | None:
        return self.remote_ids[-1] if self.remote_ids else None

    def canceled(self) -> bool:
        return self.cancel_requested
