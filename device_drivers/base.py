"""The driver interface every device family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from core.catalog import Limits
from core.enums import DeviceType
from core.messages import JobResult, JobSpec

ProgressCallback = Callable[[int], None]
"""Receives the job's progress in percent (0-100), as often as the driver knows it."""


class DeviceDriver(ABC):
    """Runs one job at a time for one device type.

    Drivers are built once per worker process and reused; heavy imports happen when the
    driver module is imported, never per job.
    """

    def __init__(self, device_type: DeviceType, limits: Limits) -> None:
        self.device_type = device_type
        self.limits = limits

    @abstractmethod
    def run(self, spec: JobSpec, progress: ProgressCallback) -> JobResult:
        """Run `spec` to completion and return its counts and serialized results.

        Raises `core.errors.DriverError` with a readable message when the job cannot run.
        """
