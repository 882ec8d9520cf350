"""Turns a driver's progress callbacks into throttled PROGRESS events."""

from __future__ import annotations

import time

from core.enums import EventKind
from core.messages import JobEvent, JobSpec
from workers.events import EventPublisher


class ProgressReporter:
    """Publishes progress when it grows, at most every `interval_s`. 100 is never sent: the
    job's final event (DONE) says it, one event per job fewer."""

    def __init__(
        self, publisher: EventPublisher, spec: JobSpec, started_at: float, interval_s: float
    ) -> None:
        self.publisher = publisher
        self.spec = spec
        self.started_at = started_at
        self.interval_s = interval_s
        self.last_sent = 0
        self.last_at = 0.0

    def __call__(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if percent <= self.last_sent or percent >= 100 or now - self.last_at < self.interval_s:
            return
        self.last_sent, self.last_at = percent, now
        event = JobEvent(
            job_id=self.spec.job_id,
            attempt=self.spec.attempt,
            kind=EventKind.PROGRESS,
            progress=percent,
            started_at=self.started_at,
        )
        self.publisher.publish(event)
