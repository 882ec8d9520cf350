"""A SLURM worker's own metrics (its pool is threads: they live in the serving process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from core.enums import DeviceType


class SlurmMetrics:
    def __init__(self, device_type: DeviceType) -> None:
        self.device = device_type.value
        self.queued = Gauge(
            "atomfleet_slurm_jobs_queued",
            "Jobs of this device waiting in SLURM's own queue (submitted, not yet running).",
            ["device_type"],
            registry=None,
            multiprocess_mode="mostrecent",
        )
        self.controller_up = Gauge(
            "atomfleet_slurm_controller_up",
            "1 while the device's SLURM controller answers, 0 while it does not.",
            ["device_type"],
            registry=None,
            multiprocess_mode="mostrecent",
        )
        self.submit_errors = Counter(
            "atomfleet_slurm_submit_errors_total",
            "sbatch calls that failed (refused, or the controller did not answer).",
            ["device_type"],
            registry=None,
        )
        self.queued.labels(self.device).set(0)
        self.controller_up.labels(self.device).set(1)
        self.submit_errors.labels(self.device)

    def set_queued(self, count: int) -> None:
        self.queued.labels(self.device).set(count)

    def set_up(self, up: bool) -> None:
        self.controller_up.labels(self.device).set(1 if up else 0)

    def submit_failed(self) -> None:
        self.submit_errors.labels(self.device).inc()
