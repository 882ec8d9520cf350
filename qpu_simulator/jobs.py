"""A QPU job, its wire form, and the one small state machine every status change goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qpu_simulator.protocol import JobStatus

# Moves the QPU allows; a terminal status is never left, so late moves are harmless.
_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELED}),
    JobStatus.RUNNING: frozenset({JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELED}),
}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    uid: int
    nb_run: int
    # The sequence bound to the served device, as the emulator reads it.
    sequence: str
    context: dict[str, Any]
    status: JobStatus = JobStatus.PENDING
    result: str | None = None
    created_datetime: datetime = field(default_factory=now)
    start_datetime: datetime | None = None
    end_datetime: datetime | None = None

    @property
    def program_id(self) -> int:
        """The real QPU runs each job as a program; here there is one program per job."""
        return self.uid

    def to_wire(self) -> dict[str, Any]:
        """The job as `GET /jobs/{uid}` answers it (warden's `QPUJobInfo` fields, and more)."""
        return {
            "uid": self.uid,
            "status": self.status.value,
            "result": self.result,
            "program_id": self.program_id,
            "batch_id": self.context.get("batch_id"),
            "nb_run": self.nb_run,
            "context": self.context,
            "created_datetime": _iso(self.created_datetime),
            "start_datetime": _iso(self.start_datetime),
            "end_datetime": _iso(self.end_datetime),
        }


def move(job: Job, status: JobStatus, result: str | None = None) -> bool:
    """Move `job` to `status`, stamping its times; False (and no change) if not allowed."""
    if status not in _ALLOWED.get(job.status, frozenset()):
        return False
    at = now()
    job.status = status
    if status == JobStatus.RUNNING:
        job.start_datetime = at
    if status.is_terminal:
        job.end_datetime = at
        job.result = result
    return True


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
