"""Store rows to the wire shapes of the public API: string timestamps, both `open` and `complete`.

The API answers with them, and webhooks carry them, so they live with the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.estimates import Estimate
from scheduler.models import Batch, Job, WebhookDelivery
from scheduler.state import jobs_count_per_status


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def batch_dict(batch: Batch, *, sequence_builder: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": batch.id,
        "parent_id": batch.parent_id,
        "status": batch.status.value,
        "open": batch.open,
        "complete": not batch.open,
        "priority": 0,
        "queue_priority": batch.queue_priority.value,
        "device_type": batch.device_type.value,
        "user_id": batch.user_id,
        "project_id": batch.project_id,
        "created_at": iso(batch.created_at),
        "updated_at": iso(batch.updated_at),
        "start_datetime": iso(batch.start_datetime),
        "end_datetime": iso(batch.end_datetime),
        "jobs_count": batch.jobs_count,
        "jobs_count_per_status": jobs_count_per_status(batch),
        "tags": list(batch.tags or []),
        "configuration": batch.configuration,
        "backend_configuration": batch.backend_configuration,
        "webhook": batch.webhook,
    }
    if sequence_builder:
        data["sequence_builder"] = batch.sequence_builder
    return data


def job_dict(job: Job | dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it; accepts a row or the dict intake inserted."""
    row = job if isinstance(job, dict) else None

    def get(name: str) -> Any:
        return row.get(name) if row is not None else getattr(job, name)

    status = get("status")
    return {
        "id": get("id"),
        "parent_id": get("parent_id"),
        "status": status.value,
        "runs": get("runs"),
        "batch_id": get("batch_id"),
        "project_id": get("project_id"),
        "user_id": get("user_id"),
        "created_at": iso(get("created_at")),
        "updated_at": iso(get("updated_at")),
        "start_timestamp": iso(get("start_timestamp")),
        "end_timestamp": iso(get("end_timestamp")),
        "variables": get("variables"),
        "errors": get("errors"),
        "progress": get("progress") or 0,
        "creation_order": get("creation_order"),
        "queue_position": None,
        "estimated_start_time": None,
        "estimated_end_time": None,
    }


def with_estimates(data: dict[str, Any], estimate: Estimate | None) -> dict[str, Any]:
    if estimate is not None:
        data["queue_position"] = estimate.queue_position
        data["estimated_start_time"] = iso(estimate.estimated_start_time)
        data["estimated_end_time"] = iso(estimate.estimated_end_time)
    return data


def delivery_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "url": delivery.url,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
    }
