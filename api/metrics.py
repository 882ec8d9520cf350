"""The API process's metrics: its requests, the jobs it accepted and the jobs it canceled.

Submissions and cancels are counted from the committed ledgers of the API's own
transactions (a reactor), so a request that fails after its commit still counts, and a
rolled-back one does not. Jobs that end on a worker are counted by the scheduler, which
applies their events; `atomfleet_jobs_finished_total` is summed over both.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.registry import CollectorRegistry

from core.enums import DeviceType, JobStatus, QueuePriority
from core.metrics import new_registry, priority_label
from scheduler.ledger import Ledger, Reactor

HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    def __init__(self, devices: Iterable[DeviceType]) -> None:
        self.registry: CollectorRegistry = new_registry()
        self.requests = Counter(
            "atomfleet_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atomfleet_http_request_duration_seconds",
            "Time to answer an HTTP request, body included.",
            ["route", "method"],
            buckets=HTTP_SECONDS,
            registry=self.registry,
        )
        self.submitted = Counter(
            "atomfleet_jobs_submitted_total",
            "Jobs accepted (Create Batch, Add Jobs, rebatch).",
            ["device_type", "priority"],
            registry=self.registry,
        )
        self.finished = Counter(
            "atomfleet_jobs_finished_total",
            "Jobs that ended, by device and final status (the API counts cancels: sum over "
            "instances).",
            ["device_type", "status"],
            registry=self.registry,
        )
        for device in devices:
            for priority in QueuePriority:
                self.submitted.labels(device.value, priority.value)
            self.finished.labels(device.value, JobStatus.CANCELED.value)

    def reactor(self) -> Reactor:
        def react(ledger: Ledger) -> None:
            for (device, rank), n in ledger.created_jobs.items():
                self.submitted.labels(device.value, priority_label(rank)).inc(n)
            for move in ledger.ended():
                self.finished.labels(move.device_type.value, move.new.value).inc()

        return react
