"""Every metric atomfleet exports, in one place.

The deploy tests check that the dashboard, the alerts and the autoscaling queries use only
these names and labels; the metrics tests check that the processes export exactly these.
Prometheus adds `job` and `instance` to every scraped series; they are not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
Process = Literal["api", "scheduler", "worker", "slurm_worker", "keda"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    exported_by: tuple[Process, ...]
    help: str

    def series_names(self) -> set[str]:
        """The names a query may use: a histogram is only queried through its three series."""
        if self.kind == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}

    def series_labels(self, series: str) -> set[str]:
        return set(self.labels) | ({"le"} if series.endswith("_bucket") else set())


_S: tuple[Process, ...] = ("scheduler",)
_A: tuple[Process, ...] = ("api",)
_W: tuple[Process, ...] = ("worker",)
_ALL: tuple[Process, ...] = ("api", "scheduler", "worker")
# KEDA's operator (>= 2.14 names). Scraped from KEDA's namespace, its own `namespace` label
# (the ScaledObject's) becomes `exported_namespace` unless the scrape honours labels.
_K: tuple[Process, ...] = ("keda",)
KEDA_LABELS = ("namespace", "exported_namespace", "scaledObject")

METRICS: tuple[Metric, ...] = (
    # Scheduler: gauges derived from the store at scrape time (exact), counters and histograms.
    Metric("atomfleet_jobs_waiting", "gauge", ("device_type", "priority"), _S, "PENDING jobs"),
    Metric("atomfleet_jobs_running", "gauge", ("device_type",), _S, "RUNNING jobs"),
    Metric("atomfleet_jobs", "gauge", ("device_type", "status"), _S, "all jobs by status"),
    Metric("atomfleet_batches_open", "gauge", (), _S, "open batches"),
    Metric(
        "atomfleet_oldest_waiting_job_age_seconds",
        "gauge",
        ("device_type",),
        _S,
        "age of the oldest PENDING job",
    ),
    Metric("atomfleet_workers", "gauge", ("device_type",), _S, "live consuming workers"),
    Metric("atomfleet_worker_slots", "gauge", ("device_type", "status"), _S, "slots, busy or idle"),
    Metric(
        "atomfleet_device_stalled",
        "gauge",
        ("device_type",),
        _S,
        "1 while workers claim free slots but take nothing",
    ),
    Metric("atomfleet_qpu_up", "gauge", ("device_type",), _S, "QPU devices only: 1 up, 0 down"),
    Metric("atomfleet_events_backlog", "gauge", (), _S, "worker events not yet applied"),
    Metric(
        "atomfleet_scheduler_last_loop_timestamp_seconds",
        "gauge",
        (),
        _S,
        "oldest of the scheduler loops' last turns",
    ),
    Metric(
        "atomfleet_jobs_finished_total",
        "counter",
        ("device_type", "status"),
        ("scheduler", "api"),
        "jobs ended (the API counts cancels): always sum over instances",
    ),
    Metric("atomfleet_jobs_requeued_total", "counter", ("device_type",), _S, "lost jobs re-run"),
    Metric("atomfleet_events_applied_total", "counter", (), _S, "worker events applied"),
    Metric("atomfleet_results_purged_total", "counter", (), _S, "results deleted by retention"),
    Metric(
        "atomfleet_job_queue_wait_seconds", "histogram", ("device_type",), _S, "submit to RUNNING"
    ),
    Metric("atomfleet_job_run_seconds", "histogram", ("device_type",), _S, "RUNNING to the end"),
    Metric("atomfleet_scheduler_dispatch_duration_seconds", "histogram", (), _S, "one dispatch"),
    Metric("atomfleet_scheduler_events_duration_seconds", "histogram", (), _S, "one events batch"),
    Metric("atomfleet_scheduler_reconcile_duration_seconds", "histogram", (), _S, "one reconcile"),
    Metric("atomfleet_scheduler_watch_duration_seconds", "histogram", (), _S, "one fleet watch"),
    Metric("atomfleet_scheduler_positions_duration_seconds", "histogram", (), _S, "queue orders"),
    Metric("atomfleet_scheduler_retention_duration_seconds", "histogram", (), _S, "one purge turn"),
    # API
    Metric(
        "atomfleet_http_requests_total",
        "counter",
        ("route", "method", "code"),
        _A,
        "HTTP requests answered",
    ),
    Metric(
        "atomfleet_http_request_duration_seconds",
        "histogram",
        ("route", "method"),
        _A,
        "HTTP request latency",
    ),
    Metric(
        "atomfleet_jobs_submitted_total",
        "counter",
        ("device_type", "priority"),
        _A,
        "jobs accepted",
    ),
    # Worker
    Metric(
        "atomfleet_worker_jobs_total", "counter", ("device_type", "status"), _W, "jobs a worker ran"
    ),
    Metric(
        "atomfleet_worker_job_duration_seconds",
        "histogram",
        ("device_type",),
        _W,
        "a job's time in the worker",
    ),
    # A SLURM worker (a worker of a device routed to SLURM), besides the worker's own
    Metric(
        "atomfleet_slurm_jobs_queued",
        "gauge",
        ("device_type",),
        ("slurm_worker",),
        "jobs waiting in SLURM's own queue",
    ),
    Metric(
        "atomfleet_slurm_controller_up",
        "gauge",
        ("device_type",),
        ("slurm_worker",),
        "1 while the SLURM controller answers",
    ),
    Metric(
        "atomfleet_slurm_submit_errors_total",
        "counter",
        ("device_type",),
        ("slurm_worker",),
        "failed sbatch calls",
    ),
    # Every process
    Metric(
        "atomfleet_build_info", "gauge", ("version",), ("api", "scheduler", "worker"), "always 1"
    ),
    # Operations (issue 14 section 3)
    Metric(
        "atomfleet_jobs_dispatchable",
        "gauge",
        ("device_type",),
        _S,
        "PENDING jobs not held back by a project's running cap (KEDA's demand)",
    ),
    Metric("atomfleet_redis_memory_used_bytes", "gauge", (), _S, "Redis used_memory"),
    Metric("atomfleet_redis_memory_max_bytes", "gauge", (), _S, "Redis maxmemory (0: none)"),
    Metric("atomfleet_webhook_attempts_total", "counter", ("outcome",), _S, "webhook attempts"),
    Metric("atomfleet_api_ready", "gauge", (), _A, "1 while the database and Redis answer"),
    # Process metrics of every process (a worker's: its parent and pool children summed)
    Metric("process_cpu_seconds_total", "counter", (), _ALL, "user and system CPU"),
    Metric("process_resident_memory_bytes", "gauge", (), _ALL, "resident memory"),
    Metric("process_virtual_memory_bytes", "gauge", (), _ALL, "virtual memory"),
    Metric("process_open_fds", "gauge", (), _ALL, "open file descriptors"),
    Metric("process_max_fds", "gauge", (), _ALL, "file descriptor limit"),
    Metric("process_start_time_seconds", "gauge", (), _ALL, "start, Unix time"),
    Metric(
        "python_info",
        "gauge",
        ("implementation", "major", "minor", "patchlevel", "version"),
        _ALL,
        "the Python that runs",
    ),
    # KEDA's own, for AtomfleetAutoscalerFailing
    Metric(
        "keda_scaled_object_errors_total", "counter", KEDA_LABELS, _K, "a ScaledObject's errors"
    ),
    Metric(
        "keda_scaler_detail_errors_total",
        "counter",
        (*KEDA_LABELS, "scaler", "scalerIndex", "metric", "type", "triggerIndex"),
        _K,
        "a scaler's errors",
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

# Every series name a query may select, mapped to its metric.
SERIES: dict[str, Metric] = {s: m for m in METRICS for s in m.series_names()}

# Labels every scraped series carries besides its own: Kubernetes service discovery adds
# `namespace` (compose's prometheus.yml sets it too), so that queries keep to one install.
TARGET_LABELS = frozenset({"job", "instance", "namespace"})
