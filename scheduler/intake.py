"""Intake: validate a Create Batch request, expand it per job, and persist it in one transaction.

Nothing is written unless every check passes; every problem names its field
(`jobs[2].variables: unknown variable 'omgea'`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from pulser import Sequence
from pulser.backend import EmulationConfig
from sqlalchemy import Table, delete, insert
from sqlalchemy.orm import Session

from core.enums import BatchStatus, DeviceType, JobStatus
from core.errors import InvalidRequestError
from scheduler import sequences
from scheduler.accounts import is_member
from scheduler.models import Batch, BatchTag, Job, new_id, utcnow
from scheduler.submissions import CreateBatchRequest, JobIn

# Core inserts: 10,000 rows go in one executemany, without the ORM unit of work.
JOBS = cast(Table, Job.__table__)
_LEGACY_SDK = re.compile(r"PasqalCloudSDK/0\.(\d+)")


@dataclass(frozen=True)
class Caller:
    user_id: str
    user_agent: str = ""

    @property
    def sends_placeholder_runs(self) -> bool:
        """pasqal-cloud up to 0.22 (with pulser-pasqal) sends `runs: 1` meaning "unset"."""
        m = _LEGACY_SDK.search(self.user_agent)
        return m is not None and int(m.group(1)) <= 22


@dataclass
class _BatchContext:
    device_type: DeviceType
    builder: Sequence[Any] | None
    config: EmulationConfig[Any] | None
    caller: Caller


@dataclass
class Submission:
    batch: Batch
    jobs: list[dict[str, Any]]


class Intake:
    """Validates and persists submissions; `enabled_devices` are those a fleet can serve.

    Device limits are checked by building each job's sequence with Pulser (~0.5 ms a job).
    Batches of more than `build_every_job_up_to` jobs have every job's variables checked
    and the jobs holding each variable's smallest and largest values built; a job that
    still cannot be built ends in ERROR on the worker with Pulser's reason.
    """

    def __init__(
        self, enabled_devices: Iterable[DeviceType], build_every_job_up_to: int = 1000
    ) -> None:
        self.enabled_devices = frozenset(enabled_devices)
        self.build_every_job_up_to = build_every_job_up_to

    def create_batch(
        self, session: Session, request: CreateBatchRequest, caller: Caller
    ) -> Submission:
        """Validate `request` and write the batch and its jobs; the caller commits."""
        project_id = str(request.project_id)
        if not is_member(session, caller.user_id, project_id):
            # Same answer for a project that does not exist: nothing leaks.
            raise InvalidRequestError.single("project_id", "not a project you are a member of")
        if not request.jobs and not request.is_open:
            raise InvalidRequestError.single(
                "jobs", "at least one job is required unless the batch is open"
            )
        ctx = self._batch_context(request, caller)
        now = utcnow()
        batch = Batch(
            id=new_id(),
            project_id=project_id,
            user_id=caller.user_id,
            status=BatchStatus.PENDING,
            open=request.is_open,
            device_type=ctx.device_type,
            queue_priority=request.queue_priority,
            sequence_builder=request.sequence_builder,
            backend_configuration=request.backend_configuration,
            configuration=request.configuration,
            webhook=request.webhook,
            tags=[],
            created_at=now,
            updated_at=now,
        )
        rows = self._job_rows(batch, request.jobs, ctx, first_order=0)
        batch.jobs_count = batch.count_pending = len(rows)
        session.add(batch)
        session.flush()
        set_tags(session, batch, request.tags)
        if rows:
            session.execute(insert(JOBS), rows)
        return Submission(batch, rows)

    def _batch_context(self, request: CreateBatchRequest, caller: Caller) -> _BatchContext:
        builder = (
            sequences.load_sequence(request.sequence_builder, "sequence_builder")
            if request.sequence_builder is not None
            else None
        )
        device_type = request.device_type
        if device_type is None:
            device_type = self._infer_device_type(builder, request.jobs)
        if device_type not in self.enabled_devices:
            served = ", ".join(sorted(d.value for d in self.enabled_devices))
            raise InvalidRequestError.single(
                "device_type", f"{device_type.value} is not served here (available: {served})"
            )
        config = None
        if request.backend_configuration is not None:
            if not device_type.is_emulator:
                raise InvalidRequestError.single(
                    "backend_configuration", f"only emulators take one, not {device_type.value}"
                )
            config = sequences.load_emulation_config(
                request.backend_configuration, "backend_configuration"
            )
        return _BatchContext(device_type, builder, config, caller)

    @staticmethod
    def _infer_device_type(builder: Sequence[Any] | None, jobs: list[JobIn]) -> DeviceType:
        seq = builder
        if seq is None and jobs and jobs[0].sequence is not None:
            seq = sequences.load_sequence(jobs[0].sequence, "jobs[0].sequence")
        if seq is None:
            raise InvalidRequestError.single("device_type", "required when there is no sequence")
        inferred = sequences.infer_device_type(seq)
        if inferred is None:
            raise InvalidRequestError.single(
                "device_type",
                f"required: the sequence's device {seq.device.name!r} is not a device of this "
                "platform",
            )
        return inferred

    def add_jobs(
        self,
        session: Session,
        batch: Batch,
        jobs: list[JobIn],
        caller: Caller,
        parents: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Validate and append jobs to an open batch; the caller commits."""
        builder = (
            sequences.load_sequence(batch.sequence_builder, "sequence_builder")
            if batch.sequence_builder
            else None
        )
        config = (
            sequences.load_emulation_config(batch.backend_configuration, "backend_configuration")
            if batch.backend_configuration
            else None
        )
        ctx = _BatchContext(batch.device_type, builder, config, caller)
        rows = self._job_rows(batch, jobs, ctx, first_order=batch.jobs_count)
        for row, parent in zip(rows, parents or [], strict=False):
            row["parent_id"] = parent
        if rows:
            session.execute(insert(JOBS), rows)
        batch.jobs_count += len(rows)
        batch.count_pending += len(rows)
        batch.updated_at = utcnow()
        return rows

    def _job_rows(
        self, batch: Batch, jobs: list[JobIn], ctx: _BatchContext, first_order: int
    ) -> list[dict[str, Any]]:
        problems: list[tuple[str, str]] = []
        rows: list[dict[str, Any]] = []
        now = utcnow()
        default_runs = sequences.configured_shots(ctx.config)
        for index, job in enumerate(jobs):
            field = f"jobs[{index}]"
            try:
                seq = self._check_job(job, field, ctx)
                runs = self._runs(job, field, seq, ctx, default_runs)
            except InvalidRequestError as exc:
                problems.extend(exc.problems)
                if len(problems) >= 20:  # enough to fix; do not drown the user
                    break
                continue
            rows.append(
                {
                    "id": new_id(),
                    "batch_id": batch.id,
                    "project_id": batch.project_id,
                    "user_id": batch.user_id,
                    "parent_id": None,
                    "creation_order": first_order + index,
                    "status": JobStatus.PENDING,
                    "runs": runs,
                    "variables": job.variables,
                    "sequence": job.sequence,
                    "progress": 0,
                    "errors": None,
                    "created_at": now,
                    "updated_at": now,
                    "start_timestamp": None,
                    "end_timestamp": None,
                    "device_type": ctx.device_type,
                    "priority_rank": batch.queue_priority.rank,
                    "dispatched_at": None,
                    "attempt": 0,
                }
            )
        if not problems and ctx.builder is not None and ctx.builder.is_parametrized():
            problems = self._build_problems(jobs, ctx.builder)
        if problems:
            raise InvalidRequestError(problems)
        return rows

    def _build_problems(self, jobs: list[JobIn], builder: Sequence[Any]) -> list[tuple[str, str]]:
        """Build the jobs that use the builder (or a sample of them); the first failure."""
        indices = [i for i, job in enumerate(jobs) if job.sequence is None]
        if len(indices) > self.build_every_job_up_to:
            indices = _extremes(jobs, indices)
        built: set[str] = set()
        for index in indices:
            values = jobs[index].variables or {}
            key = json.dumps(values, sort_keys=True)
            if key in built:
                continue
            try:
                sequences.build(builder, values, f"jobs[{index}].variables")
            except InvalidRequestError as exc:
                return exc.problems
            built.add(key)
        return []

    @staticmethod
    def _check_job(job: JobIn, field: str, ctx: _BatchContext) -> Sequence[Any]:
        """The sequence this job runs (the unbuilt builder when parametrized), checked."""
        if job.sequence is not None:
            if job.variables is not None:
                raise InvalidRequestError.single(
                    field, "give either variables or sequence, not both"
                )
            seq = sequences.load_sequence(job.sequence, f"{field}.sequence")
            if seq.is_parametrized():
                raise InvalidRequestError.single(
                    f"{field}.sequence", "is parametrized; a job's own sequence must be built"
                )
            return seq
        if ctx.builder is None:
            raise InvalidRequestError.single(
                f"{field}.sequence", "required when the batch has no sequence_builder"
            )
        problems = sequences.variable_problems(
            ctx.builder.declared_variables, job.variables or {}, f"{field}.variables"
        )
        if problems:
            raise InvalidRequestError(problems)
        return ctx.builder

    @staticmethod
    def _runs(
        job: JobIn, field: str, seq: Sequence[Any], ctx: _BatchContext, default_runs: int
    ) -> int:
        runs = job.runs
        if (
            runs == 1
            and ctx.device_type.is_emulator
            and ctx.config is not None
            and ctx.caller.sends_placeholder_runs
        ):
            runs = None  # pulser-pasqal's placeholder: the configuration decides
        if runs is None:
            if not ctx.device_type.is_emulator:
                raise InvalidRequestError.single(f"{field}.runs", "required for a QPU")
            runs = default_runs
        limit = sequences.max_runs(seq)
        if limit is not None and runs > limit:
            raise InvalidRequestError.single(
                f"{field}.runs", f"{runs} is over the device's maximum of {limit}"
            )
        return runs


def _extremes(jobs: list[JobIn], indices: list[int]) -> list[int]:
    """The first job and, for each variable entry, the jobs with its smallest and largest value.

    Device limits (amplitude, detuning, duration) bound quantities that grow or shrink with
    the variables, so these jobs are the ones that meet them first.
    """
    chosen = {indices[0]}
    lowest: dict[tuple[str, int], tuple[float, int]] = {}
    highest: dict[tuple[str, int], tuple[float, int]] = {}
    for index in indices:
        for name, value in (jobs[index].variables or {}).items():
            for position, item in enumerate(value if isinstance(value, list) else [value]):
                key = (name, position)
                if key not in lowest or item < lowest[key][0]:
                    lowest[key] = (item, index)
                if key not in highest or item > highest[key][0]:
                    highest[key] = (item, index)
    chosen.update(index for _, index in lowest.values())
    chosen.update(index for _, index in highest.values())
    return sorted(chosen)


def set_tags(session: Session, batch: Batch, tags: list[str]) -> None:
    """Replace the batch's tags (kept as a list for reading, as rows for the `tag` filter)."""
    unique = list(dict.fromkeys(tags))
    batch.tags = unique
    session.execute(delete(BatchTag).where(BatchTag.batch_id == batch.id))
    if unique:
        session.execute(insert(BatchTag), [{"batch_id": batch.id, "tag": t} for t in unique])
