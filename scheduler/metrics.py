"""The scheduler's counters and histograms: rates and latencies, counted as things happen.

What must be exact after a restart (jobs by status, waiting, running) is not counted here
but read from the store at scrape time (`scheduler.collector`). These come from the
committed ledgers of the scheduler's own transactions (a reactor) and from its loops.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.registry import CollectorRegistry

from core.enums import DeviceType, JobStatus
from core.metrics import JOB_SECONDS
from scheduler.ledger import Ledger, Reactor

LOOP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LOOPS = ("dispatch", "events", "reconcile", "watch", "positions", "retention")
# What the scheduler's own transactions end jobs in (cancels are the API's).
ENDED_HERE = (JobStatus.DONE, JobStatus.ERROR)
WEBHOOK_OUTCOMES = ("delivered", "rejected", "unreachable", "refused", "gone")


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry, devices: Iterable[DeviceType]) -> None:
        self.registry = registry
        self.finished = Counter(
            "atomfleet_jobs_finished_total",
            "Jobs that ended, by device and final status (the API counts cancels: sum over "
            "instances).",
            ["device_type", "status"],
            registry=registry,
        )
        self.requeued = Counter(
            "atomfleet_jobs_requeued_total",
            "Lost jobs (dead worker, Redis restart) put back in the backlog to run again.",
            ["device_type"],
            registry=registry,
        )
        self.events_applied = Counter(
            "atomfleet_events_applied_total",
            "Worker events (RUNNING, PROGRESS, DONE, ERROR) applied to the store.",
            registry=registry,
        )
        self.results_purged = Counter(
            "atomfleet_results_purged_total",
            "Job results deleted by the results retention (ATOMFLEET_RESULTS_RETENTION_DAYS).",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "atomfleet_webhook_attempts_total",
            "Webhook delivery attempts, by outcome: delivered (2xx), rejected (another "
            "status), unreachable (no answer), refused (a private address), gone (410).",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome)
        self.queue_wait = Histogram(
            "atomfleet_job_queue_wait_seconds",
            "From a job's submission to its start on a worker.",
            ["device_type"],
            buckets=JOB_SECONDS,
            registry=registry,
        )
        self.run_time = Histogram(
            "atomfleet_job_run_seconds",
            "From a job's start on a worker to its end.",
            ["device_type"],
            buckets=JOB_SECONDS,
            registry=registry,
        )
        self.loop_seconds = {
            name: Histogram(
                f"atomfleet_scheduler_{name}_duration_seconds",
                f"One turn of the scheduler's {name} loop (its work, not its waiting).",
                buckets=LOOP_SECONDS,
                registry=registry,
            )
            for name in LOOPS
        }
        # Every series of the served devices exists from the start, at 0, so that the
        # first job is a visible increase.
        for device in devices:
            for status in ENDED_HERE:
                self.finished.labels(device.value, status.value)
            self.requeued.labels(device.value)
            self.queue_wait.labels(device.value)
            self.run_time.labels(device.value)

    def webhook_attempted(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()

    def observe_loop(self, name: str, seconds: float) -> None:
        if name in self.loop_seconds:
            self.loop_seconds[name].observe(seconds)

    def reactor(self) -> Reactor:
        """Counts what a committed ledger of this process did to jobs."""

        def react(ledger: Ledger) -> None:
            for move in ledger.moves:
                device = move.device_type.value
                if move.first_start and move.started_at is not None:
                    wait_s = (move.started_at - move.created_at).total_seconds()
                    self.queue_wait.labels(device).observe(max(0.0, wait_s))
                if move.new.is_terminal:
                    self.finished.labels(device, move.new.value).inc()
                    if move.started_at is not None:
                        run_s = (move.at - move.started_at).total_seconds()
                        self.run_time.labels(device).observe(max(0.0, run_s))
            for device_type, n in ledger.requeued.items():
                self.requeued.labels(device_type.value).inc(n)

        return react
