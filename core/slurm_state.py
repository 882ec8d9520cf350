"""What SLURM workers publish in Redis, and what the other processes read of it.

- `<ns>:slurm:submitted:<job_id>:<attempt>`: the SLURM submission of that attempt (JSON
  `SlurmSubmission`), written right after `sbatch` answered and before any wait, so that
  a worker killed mid-job resumes polling it and never submits the same attempt twice.
- `<ns>:slurm:jobs:<DEVICE>`: hash job id -> `SlurmSubmission` (with its last known
  SLURM state) of the device's jobs in flight; `atomfleet status` lists them.
- `<ns>:slurm:health:<DEVICE>`: JSON `SlurmHealth` (with a TTL): whether the device's
  cluster answers. Phase 2: the scheduler shows the device DOWN and stops dispatching.
"""

from __future__ import annotations

import time

import redis
from pydantic import BaseModel, Field, ValidationError

from core.enums import DeviceType

HEALTH_TTL_S = 300


class SlurmSubmission(BaseModel):
    job_id: str
    attempt: int
    slurm_job_id: str
    cluster: str
    directory: str = Field(description="The attempt's directory in the shared directory.")
    name: str = Field(description="SLURM's job name.")
    submitted_at: float = Field(default_factory=time.time)
    state: str = "SUBMITTED"
    resubmission: int = 0

    @property
    def remote_id(self) -> str:
        """The job's remote id in events and the store: `cluster/slurm job id`."""
        return f"{self.cluster}/{self.slurm_job_id}"


class SlurmHealth(BaseModel):
    up: bool
    checked_at: float = Field(default_factory=time.time)
    since: float = Field(default_factory=time.time, description="When `up` last changed.")
    error: str = ""


def _text(raw: object) -> str | None:
    if isinstance(raw, bytes):
        return raw.decode()
    return raw if isinstance(raw, str) else None


class SlurmState:
    """One deployment's SLURM keys (`namespace`), read and written with `client`."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def submitted_key(self, job_id: str, attempt: int) -> str:
        return f"{self.namespace}:slurm:submitted:{job_id}:{attempt}"

    def jobs_key(self, device_type: DeviceType) -> str:
        return f"{self.namespace}:slurm:jobs:{device_type.value}"

    def health_key(self, device_type: DeviceType) -> str:
        return f"{self.namespace}:slurm:health:{device_type.value}"

    # Written by the SLURM workers

    def record(self, device_type: DeviceType, sub: SlurmSubmission, ttl_s: int) -> None:
        """The submission, for its attempt and among the device's jobs in flight."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.submitted_key(sub.job_id, sub.attempt), sub.model_dump_json(), ex=ttl_s)
        pipe.hset(self.jobs_key(device_type), sub.job_id, sub.model_dump_json())
        pipe.execute()

    def update_state(self, device_type: DeviceType, sub: SlurmSubmission, state: str) -> None:
        if sub.state == state:
            return
        sub.state = state
        self.client.hset(self.jobs_key(device_type), sub.job_id, sub.model_dump_json())

    def forget(self, device_type: DeviceType, job_id: str, attempts: int) -> None:
        """The job ended (reported): no longer in flight, no longer resumable."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.jobs_key(device_type), job_id)
        for attempt in range(1, attempts + 1):
            pipe.delete(self.submitted_key(job_id, attempt))
        pipe.execute()

    def set_health(self, device_type: DeviceType, up: bool, error: str = "") -> SlurmHealth:
        previous = self.health(device_type)
        now = time.time()
        since = previous.since if previous is not None and previous.up == up else now
        health = SlurmHealth(up=up, checked_at=now, since=since, error=error)
        self.client.set(self.health_key(device_type), health.model_dump_json(), ex=HEALTH_TTL_S)
        return health

    # Read by the workers (resume), `atomfleet status` and the scheduler

    def submission(self, job_id: str, attempt: int) -> SlurmSubmission | None:
        raw = _text(self.client.get(self.submitted_key(job_id, attempt)))
        try:
            return SlurmSubmission.model_validate_json(raw) if raw else None
        except ValidationError:
            return None

    def latest_submission(self, job_id: str, attempt: int) -> SlurmSubmission | None:
        """This attempt's submission, else the newest of an earlier attempt."""
        for earlier in range(attempt, 0, -1):
            found = self.submission(job_id, earlier)
            if found is not None:
                return found
        return None

    def in_flight(self, device_type: DeviceType) -> list[SlurmSubmission]:
        raw = self.client.hgetall(self.jobs_key(device_type))
        found = []
        for value in raw.values():
            try:
                found.append(SlurmSubmission.model_validate_json(value))
            except ValidationError:
                continue
        return sorted(found, key=lambda s: s.submitted_at)

    def health(self, device_type: DeviceType) -> SlurmHealth | None:
        raw = _text(self.client.get(self.health_key(device_type)))
        try:
            return SlurmHealth.model_validate_json(raw) if raw else None
        except ValidationError:
            return None
