"""Wire schemas of the responses, for the OpenAPI document (`/docs`).

Routes build their JSON directly (a 10,000-job batch is serialized in milliseconds); these
models describe that JSON field by field, and a test holds the two together.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class JobOut(BaseModel):
    """Response for a job, without its result (see results_link)."""

    id: str = Field(description="Unique identifier for the job.")
    parent_id: str | None = Field(description="ID of the original job if created from a retry.")
    status: str = Field(description="Current job status: PENDING RUNNING DONE ERROR CANCELED.")
    runs: int = Field(description="Number of times the pulse sequence is repeated (shots).")
    batch_id: str = Field(description="ID of the batch this job belongs to.")
    project_id: str = Field(description="ID of the project this job belongs to.")
    user_id: str = Field(description="ID of the user who created the job.")
    created_at: str = Field(description="Timestamp when the job was created (ISO-8601).")
    updated_at: str = Field(description="Timestamp of the last job update (ISO-8601).")
    start_timestamp: str | None = Field(description="When the emulator or QPU started it.")
    end_timestamp: str | None = Field(description="When it finished, errored or was canceled.")
    variables: dict[str, Any] | None = Field(
        description="Variable assignments used to build the pulse sequence."
    )
    errors: list[str] | None = Field(description="Errors returned during job execution.")
    progress: int = Field(description="Job progress percentage (0-100).")
    creation_order: int = Field(description="Position in the creation order within the batch.")
    queue_position: int | None = Field(
        default=None,
        description="Jobs ahead of it on its device under the current policy (exact for the "
        "first 10,000, then an upper bound); null unless PENDING (and on create).",
    )
    estimated_start_time: str | None = Field(
        default=None,
        description="When it should start (ISO-8601), from the device's run-time model, the "
        "jobs ahead and the live worker slots; null when unknown.",
    )
    estimated_end_time: str | None = Field(
        default=None, description="When it should end (ISO-8601); null when unknown."
    )
    sequence: str | None = Field(
        default=None,
        description="The built pulse sequence (only on GET /api/v2/jobs/{id}); null once the "
        "results retention purged the job.",
    )


class BatchOut(BaseModel):
    """Response for a batch."""

    id: str = Field(description="Unique identifier for the batch.")
    parent_id: str | None = Field(description="ID of the parent batch if created by rebatch.")
    status: str = Field(
        description="Current batch status: PENDING RUNNING DONE ERROR CANCELED TIMED_OUT."
    )
    open: bool = Field(description="Whether the batch is open and accepting additional jobs.")
    complete: bool = Field(description="Deprecated. Use open instead. True when closed.")
    priority: int = Field(description="Deprecated. Priority of the batch.")
    queue_priority: str = Field(description="Priority queue on which the batch is scheduled.")
    device_type: str = Field(description="Target device type for the batch.")
    user_id: str = Field(description="ID of the user who created the batch.")
    project_id: str = Field(description="ID of the project this batch belongs to.")
    created_at: str = Field(description="Timestamp when the batch was created (ISO-8601).")
    updated_at: str = Field(description="Timestamp of the last batch update (ISO-8601).")
    start_datetime: str | None = Field(description="When processing of its first job started.")
    end_datetime: str | None = Field(description="When it finished, errored or was canceled.")
    jobs_count: int = Field(description="Total number of jobs in the batch.")
    jobs_count_per_status: dict[str, int] = Field(description="Number of jobs by status.")
    tags: list[str] = Field(description="User-defined labels for organizing batches.")
    configuration: dict[str, Any] | None = Field(
        description="Deprecated. Use backend_configuration. Extra configuration for job execution."
    )
    backend_configuration: str | None = Field(
        description="Serialized emulator backend configuration (a Pulser EmulationConfig)."
    )
    webhook: str | None = Field(description="URL stored with the batch.")
    sequence_builder: str | None = Field(
        default=None, description="Serialized Pulser sequence shared by all jobs."
    )
    job_ids: list[str] | None = Field(
        default=None, description="IDs of its jobs, in creation order (GET only)."
    )
    jobs: list[JobOut] | None = Field(
        default=None, description="Its jobs, complete and in creation order (create, add jobs)."
    )


class BatchStatusOut(BaseModel):
    status: str = Field(description="Current batch status.")
    jobs_count_per_status: dict[str, int] = Field(description="Number of jobs by status.")


class JobStatusOut(BaseModel):
    status: str = Field(description="Current job status.")


class ResultsLinkOut(BaseModel):
    results_link: str | None = Field(
        description="Pre-signed URL of the result; null until the result exists."
    )


class ResultOut(BaseModel):
    counter: dict[str, int] = Field(description="Bitstring (register order) to count.")
    serialised_results: str | None = Field(
        description="The emulator's pulser.backend.Results.to_abstract_repr()."
    )


class BatchCancellation(BaseModel):
    batches: list[BatchOut] = Field(description="The batches canceled.")
    errors: dict[str, str] = Field(description="Why each other batch was not, by its id.")


class JobCancellation(BaseModel):
    jobs: list[JobOut] = Field(description="The jobs canceled.")
    errors: dict[str, str] = Field(description="Why each other matching job was not, by id.")


class DeviceLimits(BaseModel):
    max_atoms: int = Field(description="Most atoms in a register.")
    max_duration_ns: int = Field(description="Longest sequence, in ns.")
    max_runs: int = Field(description="Most runs (shots) of one job.")
    max_atoms_noisy: int | None = Field(
        description="Most atoms when the noise model needs a density matrix."
    )
    max_bond_dim: int | None = Field(description="Largest MPS bond dimension (emu-mps).")
    max_trajectories: int = Field(description="Most noise trajectories (n_trajectories).")
    time_limit_s: int = Field(description="Longest a job may run, in s; over it, it ends ERROR.")
    max_operations: int = Field(description="Most operations in one sequence.")
    max_channels: int = Field(description="Most declared channels.")
    max_samples: int = Field(description="Most waveform samples: 1 per ns of each operation.")
    max_traps: int = Field(description="Most traps in the register's layout.")
    max_variables: int = Field(description="Most declared variables.")
    max_variable_values: int = Field(description="Most values of all variables together.")
    max_expression_depth: int = Field(description="Deepest nesting of expressions.")
    max_expression_nodes: int = Field(description="Most expressions and variable references.")


class DeviceOut(BaseModel):
    device_type: str = Field(description="The device type.")
    kind: str = Field(description="EMULATOR, QPU or TEST.")
    status: str = Field(
        description="UP while a worker consumes its queues; STALLED while its workers claim "
        "free slots but take nothing; DOWN without workers."
    )
    workers: int = Field(description="Workers seen consuming in the last 30 s.")
    slots: int = Field(description="Jobs those workers can run at once.")
    jobs_pending: int = Field(description="Its jobs waiting to run.")
    jobs_running: int = Field(description="Its jobs running.")
    limits: DeviceLimits = Field(description="What one job may ask of it.")


class WebhookDeliveryOut(BaseModel):
    """A batch's webhook notification and where its delivery stands."""

    id: str = Field(description="The webhook-id header, the same on every attempt.")
    url: str = Field(description="Where it is POSTed.")
    status: str = Field(
        description="PENDING (to be attempted again), DELIVERED (a 2xx), GONE (the receiver "
        "answered 410), FAILED (every attempt failed) or REFUSED (a non-public address)."
    )
    attempts: int = Field(description="Attempts made.")
    last_status_code: int | None = Field(description="The last attempt's HTTP status.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: str | None = Field(description="When the next attempt is due.")
    created_at: str = Field(description="When the batch ended (ISO-8601).")
    delivered_at: str | None = Field(description="When a 2xx came back.")


class PublicSpec(BaseModel):
    device_type: str = Field(description="The device type.")
    specs: str = Field(description="Pulser device abstract representation (a JSON string).")


class Pagination(BaseModel):
    total: int = Field(description="Number of items matching the query.")
    start: int = Field(description="Offset of the first item of this page.")
    end: int = Field(description="Offset after the last item of this page; page on it.")


class Envelope(BaseModel, Generic[T]):
    status: str = Field(description="'success'.")
    code: int = Field(description="The HTTP status code.")
    message: str = Field(description="'OK.'")
    data: T = Field(description="The payload.")


class PagedEnvelope(Envelope[T], Generic[T]):
    pagination: Pagination = Field(description="Where this page lies in the whole list.")


class ErrorData(BaseModel):
    description: list[str] = Field(description="What was wrong, each as 'field: reason'.")


class ErrorEnvelope(BaseModel):
    status: str = Field(description="'fail'.")
    code: int = Field(description="The HTTP status code.")
    message: str = Field(description="The status phrase.")
    data: ErrorData


def doc(
    model: Any, paged: bool = False, errors: tuple[int, ...] = (401,)
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route returning `model` in the envelope, with its error answers
    (`api.openapi` adds those every route may give: 422, 400 and 413, 500 and 503)."""
    wrapper: Any = PagedEnvelope if paged else Envelope
    responses: dict[int | str, dict[str, Any]] = {200: {"model": wrapper[model]}}
    for code in errors:
        responses[code] = {"model": ErrorEnvelope}
    return responses
