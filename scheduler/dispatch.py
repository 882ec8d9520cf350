"""The dispatcher: moves PENDING jobs from the store onto Celery queues.

The backlog stays in the database; Redis holds at most `dispatch_window_per_device`
waiting messages per device type. Jobs go out strictly by level (HIGH, MEDIUM, LOW)
and first-in first-out within a level; workers consume their three queues in that
order, so a late HIGH job still overtakes every waiting MEDIUM one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.broker import celery_config
from core.config import Settings
from core.enums import DeviceType, JobStatus, QueuePriority
from core.messages import JobSpec
from core.names import RUN_JOB_TASK, RedisKeys, queue_name
from scheduler.models import Batch, Job, utcnow

log = logging.getLogger(__name__)

_BY_RANK = {p.rank: p for p in QueuePriority}


def make_producer(settings: Settings) -> Celery:
    """A Celery app used only to publish tasks by name (no worker code is imported)."""
    app = Celery("atomfleet-scheduler")
    app.conf.update(celery_config(settings))
    return app


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        producer: Celery,
        devices: Iterable[DeviceType],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.producer = producer
        self.keys = RedisKeys(settings.namespace)
        self.devices = list(devices)

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until a submission or an event wakes us, or `timeout_s` passes."""
        if self.client.blpop([self.keys.dispatch_wakeup], timeout=timeout_s) is not None:
            self.client.delete(self.keys.dispatch_wakeup)

    def dispatch_once(self) -> int:
        return sum(self._dispatch_device(device) for device in self.devices)

    def _dispatch_device(self, device: DeviceType) -> int:
        with self.sessions.begin() as session:
            waiting = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.device_type == device,
                    Job.status == JobStatus.PENDING,
                    Job.dispatched_at.is_not(None),
                )
            )
            room = self.settings.dispatch_window_per_device - (waiting or 0)
            if room <= 0:
                return 0
            rows = session.execute(
                select(Job, Batch)
                .join(Batch, Batch.id == Job.batch_id)
                .where(
                    Job.device_type == device,
                    Job.status == JobStatus.PENDING,
                    Job.dispatched_at.is_(None),
                )
                .order_by(Job.priority_rank, Job.created_at, Job.batch_id, Job.creation_order)
                .limit(room)
                .with_for_update(of=Job, skip_locked=True)
            ).all()
            now = utcnow()
            specs = []
            for job, batch in rows:
                job.attempt += 1
                job.dispatched_at = now
                specs.append((_spec(job, batch), _BY_RANK[job.priority_rank]))
        # Committed first: if publishing fails now, reconciliation sends the job again.
        sent = 0
        for spec, priority in specs:
            try:
                self._publish(spec, priority)
                sent += 1
            except Exception:
                log.exception("could not publish job %s; it goes back to the backlog", spec.job_id)
                self._undispatch(spec)
        return sent

    def _publish(self, spec: JobSpec, priority: QueuePriority) -> None:
        ttl_s = self.settings.job_time_limit_s * 2
        self.client.set(self.keys.current_attempt(spec.job_id), spec.attempt, ex=ttl_s)
        self.producer.send_task(
            RUN_JOB_TASK,
            args=[spec.model_dump(mode="json", exclude_none=True)],
            queue=queue_name(spec.device_type, priority),
            task_id=task_id(spec.job_id, spec.attempt),
        )

    def _undispatch(self, spec: JobSpec) -> None:
        try:
            with self.sessions.begin() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == spec.job_id, Job.attempt == spec.attempt)
                    .values(dispatched_at=None, attempt=Job.attempt - 1)
                )
        except Exception:
            log.exception("could not put job %s back; reconciliation will", spec.job_id)


def task_id(job_id: str, attempt: int) -> str:
    return f"{job_id}.{attempt}"


def job_id_of_task(task: str) -> str:
    return task.rsplit(".", 1)[0]


def _spec(job: Job, batch: Batch) -> JobSpec:
    sequence = job.sequence if job.sequence is not None else batch.sequence_builder
    assert sequence is not None, "intake guarantees a sequence"
    return JobSpec(
        job_id=job.id,
        batch_id=batch.id,
        attempt=job.attempt,
        device_type=job.device_type,
        sequence=sequence,
        variables=job.variables,
        runs=job.runs,
        backend_configuration=batch.backend_configuration,
        configuration=batch.configuration,
    )
