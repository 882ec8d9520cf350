"""The driver interface every device family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from core.enums import DeviceType
from core.messages import JobResult, JobSpec

ProgressCallback = Callable[[int], None]
"""Receives the job's progress in percent (0-100), as often as the driver knows it."""


class DeviceDriver(ABC):
    """Runs one job at a time on one device family.

    Drivers are built once per worker process and reused; heavy imports happen when the
    driver module is imported, never per job.
    """

    device_types: ClassVar[frozenset[DeviceType]]

    @abstractmethod
    def run(self, spec: JobSpec, progress: ProgressCallback) -> JobResult:
        """Run `spec` to completion and return its counts and serialized results.

        Raises `core.errors.DriverError` with a readable message when the job cannot run.
        """
