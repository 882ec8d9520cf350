"""Every name that crosses a process boundary: queues, Redis keys, streams, tasks."""

from __future__ import annotations

from core.enums import DeviceType, QueuePriority

RUN_JOB_TASK = "atomfleet.run_job"
EVENTS_GROUP = "scheduler"
WORKER_HEARTBEAT_S = 5.0
WORKER_HEARTBEAT_TTL_S = 30.0  # a worker not seen for this long is gone
WAKEUP_LIST_MAX = 100

_LEVEL = {QueuePriority.HIGH: "high", QueuePriority.MEDIUM: "medium", QueuePriority.LOW: "low"}


def queue_name(device_type: DeviceType, priority: QueuePriority) -> str:
    """Celery queue of one device type and level, e.g. `EMU_MPS.high`."""
    return f"{device_type.value}.{_LEVEL[priority]}"


def device_queues(device_type: DeviceType) -> list[str]:
    """The queues a worker of `device_type` consumes, most urgent first."""
    return [queue_name(device_type, p) for p in sorted(QueuePriority, key=lambda p: p.rank)]


class RedisKeys:
    """Redis keys of one deployment; `namespace` keeps deployments and test runs apart."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    @property
    def celery_prefix(self) -> str:
        """Celery's `global_keyprefix`: queues live under the namespace too."""
        return f"{self.namespace}:celery:"

    @property
    def events_stream(self) -> str:
        return f"{self.namespace}:events"

    @property
    def dispatch_wakeup(self) -> str:
        """A list the dispatcher blocks on: each entry names a device that may have room or
        backlog (intake, workers taking a message, ended or requeued jobs push to it)."""
        return f"{self.namespace}:dispatch:wakeup"

    def dispatch_low_water(self, device_type: DeviceType) -> str:
        """How few messages may wait in the device's queues before a worker taking one wakes
        the dispatcher; set by the dispatcher with a TTL (absent: always wake it)."""
        return f"{self.namespace}:dispatch:low:{device_type.value}"

    def lease(self, job_id: str) -> str:
        """Held by the worker running a job, renewed while it runs."""
        return f"{self.namespace}:lease:{job_id}"

    def deaths(self, job_id: str) -> str:
        """Hash: attempt -> how the worker process running it died ("was killed (SIGKILL)"),
        written by the worker's parent process; a message of such an attempt is dropped."""
        return f"{self.namespace}:deaths:{job_id}"

    def current_attempt(self, job_id: str) -> str:
        """The attempt the scheduler last dispatched; older messages are dropped."""
        return f"{self.namespace}:attempt:{job_id}"

    def workers(self, device_type: DeviceType) -> str:
        """Sorted set of a device's consuming workers, scored by their last heartbeat (Unix
        time); a worker that stopped consuming stops beating."""
        return f"{self.namespace}:workers:{device_type.value}"

    def worker_info(self, device_type: DeviceType) -> str:
        """Hash: worker -> JSON `{"concurrency", "busy", "host", "pid"}` (its last beat)."""
        return f"{self.namespace}:workers:{device_type.value}:info"

    def device_state(self, device_type: DeviceType) -> str:
        """Hash the scheduler keeps per device: `stalled_since` (Unix time) while its
        workers claim free slots but take no waiting message; for a QPU, `operational`
        (UP, DOWN or UNREACHABLE), `checked_at` and `specs` (its Pulser device JSON)."""
        return f"{self.namespace}:device:{device_type.value}"

    def remote_id(self, job_id: str) -> str:
        """The device's own id of the job (a QPU job uid), kept so a new attempt resumes it."""
        return f"{self.namespace}:remote:{job_id}"

    def queue_order(self, device_type: DeviceType) -> str:
        """Hash the scheduler publishes: job id -> "position expected_seconds_ahead" of the
        device's waiting jobs, and `~meta` (JSON: when, slots, ...); replaced whole."""
        return f"{self.namespace}:order:{device_type.value}"

    def queue_order_wanted(self, device_type: DeviceType) -> str:
        """Set by the API (with a TTL) whenever it reads the device's order: keep it fresh."""
        return f"{self.namespace}:order:{device_type.value}:wanted"

    def queue_order_asked(self, device_type: DeviceType) -> str:
        """Counter of the API's requests for a new order of the device (a job newer than it)."""
        return f"{self.namespace}:order:{device_type.value}:asked"

    @property
    def queue_order_wakeup(self) -> str:
        """A list the order publisher blocks on: each entry names a device asked for."""
        return f"{self.namespace}:order:wakeup"

    @property
    def queue_order_publisher(self) -> str:
        """Set (with a TTL) while a scheduler publishes orders; absent, the API computes."""
        return f"{self.namespace}:order:publisher"

    def cancel_flag(self, job_id: str) -> str:
        return f"{self.namespace}:cancel:{job_id}"

    def celery_queue(self, queue: str) -> str:
        return f"{self.celery_prefix}{queue}"

    @property
    def celery_unacked(self) -> str:
        return f"{self.celery_prefix}unacked"
