"""Intake: validate a Create Batch request, expand it per job, and persist it in one transaction.

Nothing is written unless every check passes; every problem names its field
(`jobs[2].variables: unknown variable 'omgea'`). Everything that scales memory or time is
bounded before it is spent: the number of jobs and of distinct sequences, then each
sequence's atoms and duration read from its JSON (`sequence_bounds`), then runs and the
emulation configuration; only then does Pulser deserialize and build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pulser import Sequence
from pulser.backend import EmulationConfig
from pulser.devices._device_datacls import BaseDevice
from sqlalchemy import Table, delete, insert
from sqlalchemy.orm import Session

from core.catalog import DeviceEntry, Limits, SpecsSource, entry
from core.config import Settings
from core.enums import BatchStatus, DeviceType, JobStatus
from core.errors import InvalidRequestError, ServiceUnavailableError
from scheduler import quotas, sequences
from scheduler.accounts import is_member
from scheduler.intake_checks import (
    BuiltChecks,
    build_problems,
    build_problems_of,
    check_built,
    check_shape,
)
from scheduler.ledger import ledger
from scheduler.models import Batch, BatchTag, Job, new_id, utcnow
from scheduler.sandbox import Sandbox
from scheduler.sequence_bounds import SequenceShape
from scheduler.specs import DeviceSpecs
from scheduler.submissions import CreateBatchRequest, JobIn

# Core inserts: 10,000 rows go in one executemany, without the ORM unit of work.
JOBS = cast(Table, Job.__table__)
MAX_PROBLEMS = 20  # enough to fix; do not drown the user


@dataclass(frozen=True)
class Caller:
    user_id: str
    # Its SDK sends `runs: 1` meaning "unset" (the API tells, from the User-Agent).
    sends_placeholder_runs: bool = False


@dataclass
class _BatchContext:
    device: DeviceEntry  # resolved once per submission
    limits: Limits
    builder: Sequence[Any] | None
    builder_shape: SequenceShape | None
    config: EmulationConfig[Any] | None
    caller: Caller
    # The specs sequences are moved onto and checked against as the hardware would (a QPU,
    # or EMU_FRESNEL); None: a sequence runs on the device it was written for.
    target: BaseDevice | None = None
    # Each distinct per-job sequence, deserialized once (and moved onto `target`).
    own: dict[str, tuple[SequenceShape, Sequence[Any]]] = field(default_factory=dict)
    builder_json: str | None = None  # the builder's abstract repr, as it was sent

    @property
    def checks(self) -> BuiltChecks:
        return BuiltChecks(self.target, self.limits, self.device_type, self.config)

    @property
    def device_type(self) -> DeviceType:
        return self.device.device_type

    def retarget(self, seq: Sequence[Any], field_name: str) -> Sequence[Any]:
        """`seq` on the target's specs (422 when it does not fit them)."""
        if self.target is None:
            return seq
        return sequences.on_device(seq, self.target, field_name)


@dataclass
class Submission:
    batch: Batch
    jobs: list[dict[str, Any]]


class Intake:
    """Validates and persists submissions for the devices this deployment serves.

    Device limits are checked by building each job's sequence with Pulser (~0.5 ms a job).
    Batches of more than `intake_build_every_job_up_to` jobs have every job's variables
    and bounds checked and the jobs holding each variable's smallest and largest values
    built; a job that still cannot be built ends in ERROR on the worker with the reason.
    """

    def __init__(
        self, settings: Settings, specs: DeviceSpecs | None = None, sandbox: Sandbox | None = None
    ) -> None:
        self.settings = settings
        self.specs = specs
        self.enabled_devices = frozenset(settings.devices)
        # Where Pulser validates and deserializes, within a budget (None: in this process).
        self.sandbox = sandbox

    def _load_sequence(self, serialized: str, field_name: str) -> Sequence[Any]:
        if self.sandbox is None:
            return sequences.load_sequence(serialized, field_name)
        return cast(Sequence[Any], self.sandbox.load_sequence(serialized, field_name))

    def check_served(self, device_type: DeviceType) -> None:
        if device_type not in self.enabled_devices:
            served = ", ".join(sorted(d.value for d in self.enabled_devices))
            raise InvalidRequestError.single(
                "device_type", f"{device_type.value} is not served here (available: {served})"
            )

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
        self._check_batch_size("jobs", len(request.jobs))
        quotas.check(session, project_id, "jobs", batch_jobs=len(request.jobs),
                     new_jobs=len(request.jobs))  # fmt: skip
        ctx = self._batch_context(request, caller)
        builder = request.sequence_builder
        if ctx.target is not None and ctx.builder is not None:
            builder = sequences.serialize(ctx.builder)  # what will run: on the target's specs
        batch = new_batch(
            project_id=project_id,
            user_id=caller.user_id,
            device_type=ctx.device_type,
            queue_priority=request.queue_priority,
            open=request.is_open,
            sequence_builder=builder,
            backend_configuration=request.backend_configuration,
            configuration=request.configuration,
            webhook=request.webhook,
        )
        rows = self._job_rows(batch, request.jobs, ctx, first_order=0, at=batch.created_at)
        persist(session, batch, rows, request.tags)
        return Submission(batch, rows)

    def _check_batch_size(self, field_name: str, jobs: int) -> None:
        limit = self.settings.max_jobs_per_batch
        if jobs > limit:
            raise InvalidRequestError.single(
                field_name, f"{jobs} jobs is over the limit of {limit} jobs per batch"
            )

    def _batch_context(self, request: CreateBatchRequest, caller: Caller) -> _BatchContext:
        builder_shape = (
            SequenceShape(request.sequence_builder, "sequence_builder")
            if request.sequence_builder is not None
            else None
        )
        device_type = request.device_type or self._infer_device_type(request)
        self.check_served(device_type)
        device = entry(device_type)
        target, limits = self._target(device)
        builder = None
        if builder_shape is not None:
            assert request.sequence_builder is not None
            # Its fixed parts are built when it is deserialized: bound them first.
            check_shape(builder_shape, limits, device_type, {}, fixed_only=True)
            builder = self._load_sequence(request.sequence_builder, "sequence_builder")
            _check_min_atoms(builder_shape, device)
        config = self._config(request.backend_configuration, device, limits)
        ctx = _BatchContext(device, limits, builder, builder_shape, config, caller, target)
        ctx.builder_json = request.sequence_builder
        if builder is not None:
            ctx.builder = ctx.retarget(builder, "sequence_builder")
            if not ctx.builder.is_parametrized():
                check_built(ctx.builder, ctx.checks, "sequence_builder")
        return ctx

    def _target(self, device_entry: DeviceEntry) -> tuple[BaseDevice | None, Limits]:
        """The specs to hold sequences to, and the limits (tightened by those specs)."""
        device_type = device_entry.device_type
        if device_entry.specs == SpecsSource.MOCK or self.specs is None:
            return None, self.settings.limits(device_type)
        device = self.specs.device(device_type)
        if device is None:
            raise ServiceUnavailableError(
                f"{device_type.value}'s specs are not known yet (its QPU has not answered); "
                "try again"
            )
        return device, self.specs.limits(device_type, device)

    def _config(
        self, serialized: str | None, device: DeviceEntry, limits: Limits
    ) -> EmulationConfig[Any] | None:
        if serialized is None:
            return None
        if not device.accepts_backend_configuration:
            raise InvalidRequestError.single(
                "backend_configuration", f"{device.device_type.value} takes none"
            )
        config = sequences.load_emulation_config(serialized, "backend_configuration")
        problems = sequences.config_problems(config, limits, "backend_configuration")
        if problems:
            raise InvalidRequestError(problems)
        return config

    def _infer_device_type(self, request: CreateBatchRequest) -> DeviceType:
        serialized = request.sequence_builder
        if serialized is None and request.jobs:
            serialized = request.jobs[0].sequence
        if serialized is None:
            raise InvalidRequestError.single("device_type", "required when there is no sequence")
        name = sequences.device_name(serialized)
        try:
            return DeviceType(name.upper())
        except ValueError:
            raise InvalidRequestError.single(
                "device_type",
                f"required: the sequence's device {name!r} is not a device of this platform",
            ) from None

    def add_jobs(
        self,
        session: Session,
        batch: Batch,
        jobs: list[JobIn],
        caller: Caller,
        parents: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Validate and append jobs to an open batch; the caller commits."""
        self._check_batch_size("body", batch.jobs_count + len(jobs))
        quotas.check(session, batch.project_id, "body",
                     batch_jobs=batch.jobs_count + len(jobs), new_jobs=len(jobs))  # fmt: skip
        device = entry(batch.device_type)
        target, limits = self._target(device)
        builder = shape = None
        if batch.sequence_builder:
            shape = SequenceShape(batch.sequence_builder, "sequence_builder")
            builder = self._load_sequence(batch.sequence_builder, "sequence_builder")
        config = (
            sequences.load_emulation_config(batch.backend_configuration, "backend_configuration")
            if batch.backend_configuration
            else None
        )
        ctx = _BatchContext(device, limits, builder, shape, config, caller, target)
        ctx.builder_json = batch.sequence_builder
        now = utcnow()
        rows = self._job_rows(batch, jobs, ctx, first_order=batch.jobs_count, at=now)
        for row, parent in zip(rows, parents or [], strict=False):
            row["parent_id"] = parent
        if rows:
            session.execute(insert(JOBS), rows)
            ledger(session).created(batch, len(rows))
        batch.jobs_count += len(rows)
        batch.count_pending += len(rows)
        batch.updated_at = batch.last_job_at = now
        return rows

    def _job_rows(
        self,
        batch: Batch,
        jobs: list[JobIn],
        ctx: _BatchContext,
        first_order: int,
        at: datetime,
    ) -> list[dict[str, Any]]:
        """The rows of `jobs` (created `at`), every one checked; 422 with every problem."""
        problems: list[tuple[str, str]] = []
        self._load_own_sequences(jobs, ctx)
        rows: list[dict[str, Any]] = []
        default_runs = sequences.configured_shots(ctx.config, ctx.device.default_shots)
        bounded: dict[tuple[Any, ...], int] = {}  # shape key -> duration (ns)
        for index, job in enumerate(jobs):
            job_field = f"jobs[{index}]"
            try:
                seq, atoms, duration_ns = self._check_job(job, job_field, ctx, bounded)
                runs = self._runs(job, job_field, seq, ctx, default_runs)
            except InvalidRequestError as exc:
                problems.extend(exc.problems)
                if len(problems) >= MAX_PROBLEMS:
                    break
                continue
            row = job_row(batch, first_order + index, runs, job.variables, job.sequence, at=at)
            row.update(atoms=atoms, duration_ns=duration_ns)  # for the run-time model
            rows.append(row)
        if not problems and ctx.builder is not None and ctx.builder.is_parametrized():
            problems = self._build_problems(jobs, ctx)
        if problems:
            raise InvalidRequestError(problems)
        return rows

    def _load_own_sequences(self, jobs: list[JobIn], ctx: _BatchContext) -> None:
        """Bound, then deserialize, each distinct per-job sequence once."""
        distinct: dict[str, int] = {}
        for index, job in enumerate(jobs):
            if job.sequence is not None and job.variables is None:
                distinct.setdefault(job.sequence, index)
        limit = self.settings.max_sequences_per_request
        if len(distinct) > limit:
            raise InvalidRequestError.single(
                "jobs", f"{len(distinct)} distinct sequences is over the limit of {limit} a request"
            )
        for serialized, index in distinct.items():
            seq_field = f"jobs[{index}].sequence"
            shape = SequenceShape(serialized, seq_field)
            check_shape(shape, ctx.limits, ctx.device_type, {})
            seq = self._load_sequence(serialized, seq_field)
            _check_min_atoms(shape, ctx.device)
            if seq.is_parametrized():
                raise InvalidRequestError.single(
                    seq_field, "is parametrized; a job's own sequence must be built"
                )
            ctx.own[serialized] = (shape, ctx.retarget(seq, seq_field))

    def _build_problems(self, jobs: list[JobIn], ctx: _BatchContext) -> list[tuple[str, str]]:
        """Build the jobs that use the builder (or a sample of them); the first failure.
        Pulser builds them in the sandbox, within its budget, when there is one."""
        assert ctx.builder is not None
        indices = [i for i, job in enumerate(jobs) if job.sequence is None]
        if len(indices) > self.settings.intake_build_every_job_up_to:
            indices = _extremes(jobs, indices)
        builds: dict[str, tuple[str, dict[str, Any]]] = {}
        for index in indices:
            values = jobs[index].variables or {}
            builds.setdefault(
                json.dumps(values, sort_keys=True), (f"jobs[{index}].variables", values)
            )
        if self.sandbox is None:
            return build_problems(ctx.builder, list(builds.values()), ctx.checks)
        assert ctx.builder_json is not None
        problems = self.sandbox.call(
            build_problems_of, ctx.builder_json, list(builds.values()), ctx.checks, field="jobs"
        )
        return cast(list[tuple[str, str]], problems)

    def _check_job(
        self,
        job: JobIn,
        job_field: str,
        ctx: _BatchContext,
        bounded: dict[tuple[Any, ...], int],
    ) -> tuple[Sequence[Any], int, int]:
        """The sequence this job runs (the unbuilt builder when parametrized), checked; and
        its atoms and duration (the longest channel's, read from the JSON)."""
        if job.sequence is not None:
            if job.variables is not None:
                raise InvalidRequestError.single(
                    job_field, "give either variables or sequence, not both"
                )
            shape, seq = ctx.own[job.sequence]
            check_built(seq, ctx.checks, f"{job_field}.sequence")
            return seq, shape.atoms, int(shape.footprint({}).longest_channel_ns)
        if ctx.builder is None or ctx.builder_shape is None:
            raise InvalidRequestError.single(
                f"{job_field}.sequence", "required when the batch has no sequence_builder"
            )
        values = job.variables or {}
        problems = sequences.variable_problems(
            ctx.builder.declared_variables, values, f"{job_field}.variables"
        )
        if problems:
            raise InvalidRequestError(problems)
        key = ctx.builder_shape.key(values)
        if key not in bounded:
            footprint = check_shape(
                ctx.builder_shape, ctx.limits, ctx.device_type, values, f"{job_field}.variables"
            )
            bounded[key] = int(footprint.longest_channel_ns)
        return ctx.builder, ctx.builder_shape.atoms, bounded[key]

    @staticmethod
    def _runs(
        job: JobIn, job_field: str, seq: Sequence[Any], ctx: _BatchContext, default_runs: int
    ) -> int:
        runs = job.runs
        emulator = ctx.device.is_emulator
        if runs == 1 and emulator and ctx.config is not None and ctx.caller.sends_placeholder_runs:
            runs = None  # pulser-pasqal's placeholder: the configuration decides
        if runs is None:
            if ctx.device.runs_required:
                raise InvalidRequestError.single(f"{job_field}.runs", "required for a QPU")
            runs = default_runs
        device_max = sequences.max_runs(seq)
        limit = min(ctx.limits.max_runs, device_max or ctx.limits.max_runs)
        if runs > limit:
            raise InvalidRequestError.single(
                f"{job_field}.runs", f"{runs} is over the device's maximum of {limit}"
            )
        return runs


def _check_min_atoms(shape: SequenceShape, device: DeviceEntry) -> None:
    """Refuse a register the device's emulator cannot run at all (emu-mps: one atom)."""
    problem = device.atoms_problem(shape.atoms)
    if problem is not None:
        raise InvalidRequestError.single(shape.field, problem)


def new_batch(**fields: Any) -> Batch:
    """A new PENDING batch, stamped now."""
    now = utcnow()
    return Batch(
        id=new_id(),
        status=BatchStatus.PENDING,
        tags=[],
        created_at=now,
        updated_at=now,
        last_job_at=now,
        jobs_count=0,
        count_pending=0,
        **fields,
    )


def job_row(
    batch: Batch,
    order: int,
    runs: int,
    variables: dict[str, Any] | None,
    sequence: str | None,
    parent_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The row of a new PENDING job of `batch` (inserted with Core, in bulk), created `at`
    (by default when the batch was)."""
    at = at or batch.created_at
    return {
        "id": new_id(),
        "batch_id": batch.id,
        "project_id": batch.project_id,
        "user_id": batch.user_id,
        "parent_id": parent_id,
        "creation_order": order,
        "status": JobStatus.PENDING,
        "runs": runs,
        "variables": variables,
        "sequence": sequence,
        "progress": 0,
        "errors": None,
        "created_at": at,
        "updated_at": at,
        "start_timestamp": None,
        "end_timestamp": None,
        "device_type": batch.device_type,
        "priority_rank": batch.queue_priority.rank,
        "dispatched_at": None,
        "attempt": 0,
        "atoms": None,
        "duration_ns": None,
    }


def persist(session: Session, batch: Batch, rows: list[dict[str, Any]], tags: list[str]) -> None:
    """Write a new batch, its tags and its jobs (counted in the ledger)."""
    batch.jobs_count = batch.count_pending = len(rows)
    session.add(batch)
    session.flush()
    set_tags(session, batch, tags)
    if rows:
        session.execute(insert(JOBS), rows)
        ledger(session).created(batch, len(rows))


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


def set_tags(session: Session, batch: Batch, tags: Iterable[str]) -> None:
    """Replace the batch's tags (kept as a list for reading, as rows for the `tag` filter)."""
    unique = list(dict.fromkeys(tags))
    batch.tags = unique
    session.execute(delete(BatchTag).where(BatchTag.batch_id == batch.id))
    if unique:
        session.execute(insert(BatchTag), [{"batch_id": batch.id, "tag": t} for t in unique])
