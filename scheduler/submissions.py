"""The Create Batch request, as the public API documents it (deprecated fields included)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.enums import DeviceType, QueuePriority


class JobIn(BaseModel):
    """Schema to create a job within a batch."""

    model_config = ConfigDict(extra="ignore")

    runs: int | None = Field(
        default=None, ge=1, description="Number of times the pulse sequence is repeated."
    )
    variables: dict[str, Any] | None = Field(
        default=None,
        description="Variable assignments for a parametrized sequence. "
        "Mutually exclusive with sequence.",
    )
    sequence: str | None = Field(
        default=None,
        description="Serialized Pulser sequence for this specific job. Mutually exclusive with "
        "variables. Required if no batch-level sequence_builder is provided.",
    )


class CreateBatchRequest(BaseModel):
    """Schema to parse request for the creation of a batch."""

    model_config = ConfigDict(extra="ignore")

    project_id: UUID = Field(description="ID of the project to run the batch for.")
    sequence_builder: str | None = Field(
        default=None,
        description="Serialized Pulser sequence shared by all jobs in the batch. Can be a "
        "parametrized sequence: each job then supplies its own variable assignments via "
        "variables. Optional if each job provides its own sequence via the sequence field.",
    )
    jobs: list[JobIn] = Field(
        default_factory=list,
        description="The list of jobs to execute in the batch. Required if the batch is not open.",
    )
    open: bool | None = Field(
        default=None,
        description="Whether the batch is open and accepting additional jobs.",
    )
    complete: bool | None = Field(
        default=None,
        description="Deprecated. Use open instead. When True, the batch is closed and will not "
        "accept new jobs.",
    )
    device_type: DeviceType | None = Field(
        default=None,
        description="Device used to run the batch. If not provided, it will be extracted from "
        "the device inside the sequence.",
    )
    emulator: DeviceType | None = Field(
        default=None, description="Deprecated. Use device_type instead."
    )
    backend_configuration: str | None = Field(
        default=None, description="Serialized emulator backend configuration."
    )
    configuration: dict[str, Any] | None = Field(
        default=None, description="Deprecated. Use backend_configuration instead."
    )
    priority: int | None = Field(default=None, description="Deprecated. No longer used.")
    queue_priority: QueuePriority = Field(
        default=QueuePriority.MEDIUM, description="Priority queue on which the batch is scheduled."
    )
    tags: list[str] = Field(
        default_factory=list, description="Keywords used to refine the batch search."
    )
    webhook: str | None = Field(default=None, description="URL stored with the batch.")

    @model_validator(mode="after")
    def _resolve_deprecated(self) -> CreateBatchRequest:
        if self.open is None:
            self.open = self.complete is False
        if self.device_type is None and self.emulator is not None:
            self.device_type = self.emulator
        return self

    @property
    def is_open(self) -> bool:
        return bool(self.open)
