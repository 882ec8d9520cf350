"""Domain enums. Their values are exactly what the public clients accept on the wire."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset({JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELED})
ACTIVE_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})


class BatchStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    CANCELED = "CANCELED"
    TIMED_OUT = "TIMED_OUT"


ENDED_BATCH_STATUSES = frozenset(
    {BatchStatus.DONE, BatchStatus.ERROR, BatchStatus.CANCELED, BatchStatus.TIMED_OUT}
)


class DeviceType(StrEnum):
    EMU_MPS = "EMU_MPS"
    EMU_SV = "EMU_SV"
    EMU_FREE = "EMU_FREE"
    EMU_TN = "EMU_TN"
    EMU_FRESNEL = "EMU_FRESNEL"
    FRESNEL = "FRESNEL"
    NOOP = "NOOP"


class DeviceStatus(StrEnum):
    """A device's status. Public (`/api/v1/devices`, `atomfleet status`): UP, DOWN or
    STALLED; a QPU's own operational status, as the scheduler last found it: UP, DOWN or
    UNREACHABLE. `scheduler/device_state.py` computes the public one from the other."""

    UP = "UP"  # workers consume its queues (and, for a QPU, the QPU says UP)
    DOWN = "DOWN"  # no live worker, or a QPU that is down or does not answer
    STALLED = "STALLED"  # its workers report free slots but take nothing that waits
    UNREACHABLE = "UNREACHABLE"  # a QPU whose HTTP API did not answer (or never checked)


class QueuePriority(StrEnum):
    """Scheduling level of a batch; HIGH is always served before MEDIUM, MEDIUM before LOW."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """0 for the most urgent level: sorts HIGH, MEDIUM, LOW."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {QueuePriority.HIGH: 0, QueuePriority.MEDIUM: 1, QueuePriority.LOW: 2}


class JobOrigin(StrEnum):
    """Where a job came from (the API's `origin` filter)."""

    CLIENT = "CLIENT"
    AZURE = "AZURE"
    UNKNOWN = "UNKNOWN"


class EventKind(StrEnum):
    """What a worker reports about a job on the event stream."""

    RUNNING = "RUNNING"
    PROGRESS = "PROGRESS"
    DONE = "DONE"
    ERROR = "ERROR"


class DeliveryStatus(StrEnum):
    """Where a webhook delivery stands."""

    PENDING = "PENDING"  # to be attempted (again) at next_attempt_at
    DELIVERED = "DELIVERED"  # a 2xx
    GONE = "GONE"  # the receiver answered 410: no more attempts
    FAILED = "FAILED"  # every attempt failed
    REFUSED = "REFUSED"  # its address is not public (SSRF): never attempted


class Backend(StrEnum):
    """Where a device's jobs run: in atomfleet's worker pods, or on a SLURM cluster."""

    POD = "POD"
    SLURM = "SLURM"
