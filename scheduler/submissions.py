"""The Create Batch request, as the public API documents it (deprecated fields included)."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from core.enums import DeviceType, QueuePriority

MAX_DEPTH = 32


def clean_text(value: str) -> str:
    """Text the store can hold: no NUL character, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return value


def clean_tree(value: Any, depth: int = 0) -> Any:
    """`clean_text` on every key and string of a JSON value, at most MAX_DEPTH deep; only
    finite numbers (JSON has no NaN or Infinity, though parsers accept them)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        clean_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must hold finite numbers only, not {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            clean_text(key)
            clean_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            clean_tree(item, depth + 1)
    return value


def _not_bool(value: Any) -> Any:
    """JSON's true and false are not integers (pydantic's lax mode takes them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


# Where the contract is an integer (`runs`, `priority`), a boolean is refused.
Int = Annotated[int, BeforeValidator(_not_bool)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL")
    return value


NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL), AfterValidator(clean_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(clean_tree)]
Tag = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL), AfterValidator(clean_text)]
TagList = Annotated[list[Tag], Field(max_length=100)]
WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=r"^https?://[^/?#\s]+"),
    AfterValidator(clean_text),
    AfterValidator(_http_url),
]


class JobIn(BaseModel):
    """Schema to create a job within a batch."""

    model_config = ConfigDict(extra="ignore")

    runs: Int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Number of times the pulse sequence is repeated (the device's limit applies).",
    )
    variables: JsonObject | None = Field(
        default=None,
        description="Variable assignments for a parametrized sequence. "
        "Mutually exclusive with sequence.",
    )
    sequence: Text | None = Field(
        default=None,
        description="Serialized Pulser sequence for this specific job. Mutually exclusive with "
        "variables. Required if no batch-level sequence_builder is provided.",
    )


class CreateBatchRequest(BaseModel):
    """Schema to parse request for the creation of a batch."""

    model_config = ConfigDict(extra="ignore")

    project_id: UUID = Field(description="ID of the project to run the batch for.")
    sequence_builder: Text | None = Field(
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
    backend_configuration: Text | None = Field(
        default=None, description="Serialized emulator backend configuration."
    )
    configuration: JsonObject | None = Field(
        default=None, description="Deprecated. Use backend_configuration instead."
    )
    priority: Int | None = Field(
        default=None, ge=-(2**31), le=2**31 - 1, description="Deprecated. No longer used."
    )
    queue_priority: QueuePriority = Field(
        default=QueuePriority.MEDIUM, description="Priority queue on which the batch is scheduled."
    )
    tags: TagList = Field(
        default_factory=list,
        description="Keywords used to refine the batch search (at most 100, of 200 characters).",
    )
    webhook: WebhookUrl | None = Field(
        default=None, description="An http(s) URL notified when the batch ends."
    )

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
