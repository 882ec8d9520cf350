"""The webhook outbox: a delivery row written in the same transaction as a batch's last
transition, so that a crash never loses a notification nor invents one."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import event
from sqlalchemy.orm import Session

from core.enums import DeliveryStatus
from scheduler import queries
from scheduler.ledger import StoreSession, ledger
from scheduler.models import Batch, WebhookDelivery, utcnow
from scheduler.wire import batch_dict


def payload(session: Session, batch: Batch) -> str:
    """The batch as `GET /api/v2/batches/{id}` shows it, without its sequence."""
    data = batch_dict(batch, sequence_builder=False)
    data["job_ids"] = queries.job_ids_of_batch(session, batch.id)
    return json.dumps(data, separators=(",", ":"))


@event.listens_for(StoreSession, "before_commit")
def _write_outbox(session: Session) -> None:
    found = session.info.get("ledger")
    if found is None:
        return
    for batch in ledger(session).ended_batches():
        if not batch.webhook:
            continue
        session.add(
            WebhookDelivery(
                id=f"msg_{uuid.uuid4().hex}",
                batch_id=batch.id,
                project_id=batch.project_id,
                url=batch.webhook,
                payload=payload(session, batch),
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
        )
    session.flush()
