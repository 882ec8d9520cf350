"""Schemas of what crosses a process boundary: the job task message and job events.

Both are plain JSON (Celery's JSON serializer, Redis stream fields), validated on
both sides by these pydantic models.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from core.enums import DeviceType, EventKind


class JobSpec(BaseModel):
    """Everything a worker needs to run one job; workers never read the database."""

    job_id: str
    batch_id: str
    attempt: int = Field(ge=1)
    device_type: DeviceType
    sequence: str = Field(description="Pulser abstract repr: the batch builder or the job's own.")
    variables: dict[str, Any] | None = None
    runs: int | None = Field(default=None, description="Shots; None keeps the configuration's.")
    backend_configuration: str | None = None
    configuration: dict[str, Any] | None = None
    remote_id: str | None = Field(
        default=None, description="The device's own id of this job, when an attempt got one."
    )
    submitted_at: float | None = Field(
        default=None, description="When the job was submitted (Unix time): aging reads it."
    )
    priority_rank: int | None = Field(default=None, description="The job's own level.")


class JobResult(BaseModel):
    counter: dict[str, int]
    serialised_results: str | None = None


class JobEvent(BaseModel):
    """One report from a worker; `attempt` lets the scheduler drop stale reports."""

    job_id: str
    attempt: int
    kind: EventKind
    at: float = Field(default_factory=time.time, description="Unix time at the worker.")
    started_at: float | None = Field(
        default=None, description="When this attempt started running (Unix time)."
    )
    progress: int | None = Field(default=None, ge=0, le=100)
    result: JobResult | None = None
    errors: list[str] | None = None
    remote_id: str | None = Field(
        default=None, description="The device's own id of the job (a QPU job's uid)."
    )
    slurm_job_id: str | None = Field(
        default=None, description="SLURM's job id, once SLURM accepted the job (issue 17)."
    )
    slurm_cluster_name: str | None = Field(
        default=None, description="The SLURM cluster the job was submitted to."
    )

    def to_fields(self) -> dict[str, str]:
        return {"event": self.model_dump_json(exclude_none=True)}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> JobEvent:
        raw = fields.get(b"event") if b"event" in fields else fields.get("event")  # type: ignore[call-overload]
        if raw is None:
            raise ValueError("event entry has no 'event' field")
        return cls.model_validate_json(raw)
