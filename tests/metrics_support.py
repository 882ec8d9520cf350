"""What the metrics tests share: reading a process's `/metrics` (its metric names, its
samples by labels), and putting jobs and workers in the store and Redis."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType, EventKind
from core.messages import JobEvent, JobResult
from core.names import RedisKeys
from scheduler.events import apply_events
from scheduler.intake import Caller, Intake
from scheduler.models import Job
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.metric_names import METRICS, Process
from tests.sequences import parametrized_sweep

# Label values that only ever come from a small closed set; anything else (an id, a raw
# path) in a label is a bug.
ALLOWED_LABELS = {"device_type", "priority", "status", "route", "method", "code", "version", "le",
                  "outcome", "implementation", "major", "minor", "patchlevel"}  # fmt: skip


@dataclass(frozen=True)
class Scrape:
    text: str

    def names(self) -> set[str]:
        """Metric names as tests/metric_names.py writes them (counters with `_total`)."""
        return {
            f"{f.name}_total" if f.type == "counter" else f.name
            for f in text_string_to_metric_families(self.text)
        }

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, dict(s.labels), float(s.value))
            for f in text_string_to_metric_families(self.text)
            for s in f.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(
            v
            for n, found, v in self.samples()
            if n == name and all(found.get(k) == x for k, x in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {found[label] for n, found, _ in self.samples() if n == name and label in found}

    def assert_exports_exactly_the_list(self, process: Process) -> None:
        expected = {m.name for m in METRICS if process in m.exported_by}
        assert self.names() == expected, (
            f"{process} exports {sorted(self.names() - expected)} beyond the list and lacks "
            f"{sorted(expected - self.names())}"
        )
        by_name = {m.name: m for m in METRICS}
        for name, labels, _ in self.samples():
            metric = next(
                (by_name[n] for n in _candidates(name) if n in by_name), None
            )  # a histogram's series, a counter's `_total`
            assert metric is not None, name
            assert set(labels) <= set(metric.labels) | {"le"}, (name, labels)
            assert set(labels) <= ALLOWED_LABELS, (name, labels)


def _candidates(series: str) -> list[str]:
    found = [series]
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            found.append(series.removesuffix(suffix))
    return found


def submit(
    sessions: sessionmaker[Session], account: Account, device: DeviceType, priority: str, jobs: int
) -> list[str]:
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type=device,
        queue_priority=priority,
        sequence_builder=parametrized_sweep(3),
        jobs=[{"runs": 10, "variables": {"omega": 5.0, "duration": 300}}] * jobs,
    )
    with sessions.begin() as session:
        submission = Intake(Settings()).create_batch(session, request, Caller(account.user_id))
        return [row["id"] for row in submission.jobs]


def report(sessions: sessionmaker[Session], job_id: str, kind: EventKind, **fields: object) -> None:
    """A worker's event for the job's current attempt (1), as the events loop applies it."""
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(attempt=1))
    event = JobEvent(job_id=job_id, attempt=1, kind=kind, **fields)  # type: ignore[arg-type]
    if kind == EventKind.DONE:
        event.result = JobResult(counter={"000": 10})
    with sessions.begin() as session:
        apply_events(session, [event])


def beat(client: redis.Redis, keys: RedisKeys, device: DeviceType, name: str, **info: int) -> None:
    """What a worker writes on each heartbeat (`ago` seconds ago)."""
    ago = info.pop("ago", 0)
    client.zadd(keys.workers(device), {name: time.time() - ago})
    client.hset(keys.worker_info(device), name, json.dumps(info))
