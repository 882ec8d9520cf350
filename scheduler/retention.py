"""Results retention: the results of jobs that ended long ago are deleted, their rows kept.

With `results_retention_days` set, the scheduler deletes the result and the job's own
sequence (the per-job payloads) of every job that ended more than that many days ago, and
marks the job `results_purged_at`; its results link then answers 410. The job row, its
variables and its batch (with the batch's sequence builder, one per batch, which pulser
reads before any result) stay, so lists, counts and the SDK's views of old batches are
unchanged.

It works in small transactions of at most `results_purge_batch_rows` jobs, oldest end
first, walking a partial index of the ended jobs not yet purged, and skips rows another
transaction holds: on a store of millions of jobs it never holds many locks for long, and
a turn stops after `turn_budget_s` so the loop keeps turning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import JobStatus
from core.errors import GoneError
from scheduler.models import Job, Result, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purged:
    """What one purge transaction did: jobs marked purged, results deleted."""

    jobs: int
    results: int


class ResultsRetention:
    # A turn with nothing to purge is one index probe; 30 s keeps every loop turning well
    # within AtomfleetSchedulerLoopStalled's 120 s.
    interval_s = 30.0
    turn_budget_s = 10.0

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        purged: Callable[[int], object] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        # Told the number of results each committed transaction deleted (the metric).
        self.purged = purged

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.settings.results_retention_days)

    def purge_once(self) -> int:
        """Purge, a transaction at a time, until nothing is left or the turn's budget is
        spent; returns how many results were deleted."""
        if not self.settings.results_retention_days:
            return 0
        started = time.monotonic()
        deleted = 0
        while True:
            now = utcnow()
            done = self.purge_batch(self.cutoff(now), now)
            deleted += done.results
            self.purged(done.results)
            if done.jobs < self.settings.results_purge_batch_rows:
                break
            if time.monotonic() - started >= self.turn_budget_s:
                break
        if deleted:
            log.info("results retention: deleted %d results", deleted)
        return deleted

    def purge_batch(self, cutoff: datetime, now: datetime) -> Purged:
        """One transaction: the oldest ended jobs not yet purged, up to the batch size."""
        # fenced: leader only
        with self.sessions.begin() as session:
            ids = list(
                session.scalars(
                    select(Job.id)
                    .where(
                        Job.results_purged_at.is_(None),
                        Job.end_timestamp.is_not(None),
                        Job.end_timestamp < cutoff,
                    )
                    .order_by(Job.end_timestamp)
                    .limit(self.settings.results_purge_batch_rows)
                    # A row another transaction holds is left for a later turn: never wait.
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return Purged(0, 0)
            results = session.scalars(
                delete(Result).where(Result.job_id.in_(ids)).returning(Result.job_id)
            ).all()
            session.execute(
                update(Job).where(Job.id.in_(ids)).values(results_purged_at=now, sequence=None)
            )
        return Purged(len(ids), len(results))


def purged_result(job: Job, retention_days: int) -> GoneError | None:
    """The error (410) for a job whose result the retention deleted; None if it has not.

    Only DONE jobs have a result: another ended job, purged or not, simply has none."""
    if job.results_purged_at is None or job.status != JobStatus.DONE:
        return None
    kept = f" (results are kept {retention_days} days after a job ends)" if retention_days else ""
    return GoneError(
        f"job {job.id}: its result was deleted on {job.results_purged_at:%Y-%m-%d} by the "
        f"results retention{kept}"
    )
