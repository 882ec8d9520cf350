"""How long a job runs on a device: a model learned from the device's last DONE jobs.

A least-squares fit of log(run seconds) on log(runs), log(duration) and the atom count
(emulators grow exponentially with atoms, a QPU linearly with shots); with fewer than
`MIN_SAMPLES` usable jobs, the median of those there are; with none, unknown. Refit at
most every `MODEL_TTL_S` per process, every `COLD_TTL_S` while it knows fewer than
`MIN_SAMPLES` jobs (a new device's first jobs correct the default at once). The fair-share
policy charges jobs it dispatches at this rate (a rate far from the jobs' real run time
would make the window of jobs in flight, not the run time, decide the shares); queue
estimates add it up.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import DeviceType, JobStatus
from scheduler.models import Job

MODEL_TTL_S = 30.0
COLD_TTL_S = 1.0
MIN_SAMPLES = 8
SAMPLES = 300
DEFAULT_RUN_S = 1.0
_LOG_MIN_S, _LOG_MAX_S = math.log(1e-3), math.log(1e6)  # predictions stay in [1 ms, 1e6 s]


@dataclass
class RunTimeModel:
    """log(run_s) = coef . (1, log(runs), log(duration_ns), atoms), or a constant."""

    coef: np.ndarray[Any, Any] | None = None
    constant_s: float | None = None

    def __post_init__(self) -> None:
        # plain floats: a prediction is four products, cheaper than a numpy call (orders
        # of 10,000 jobs are predicted job by job)
        self._coef = None if self.coef is None else tuple(float(c) for c in self.coef)

    def predict(self, runs: int | None, duration_ns: int | None, atoms: int | None) -> float | None:
        if self._coef is not None and runs and duration_ns and atoms:
            c0, c_runs, c_duration, c_atoms = self._coef
            log_s = c0 + c_runs * math.log(runs) + c_duration * math.log(duration_ns)
            return math.exp(min(max(log_s + c_atoms * atoms, _LOG_MIN_S), _LOG_MAX_S))
        return self.constant_s

    @classmethod
    def fit(cls, samples: list[tuple[int, int | None, int | None, float]]) -> RunTimeModel:
        """From (runs, duration_ns, atoms, run_s) of finished jobs."""
        if not samples:
            return cls()
        median = statistics.median(s[3] for s in samples)
        usable = [s for s in samples if s[0] and s[1] and s[2] and s[3] > 0]
        if len(usable) < MIN_SAMPLES:
            return cls(constant_s=median)
        x = np.array([[1.0, math.log(r), math.log(d or 1), float(a or 0)] for r, d, a, _ in usable])
        y = np.array([math.log(t) for *_, t in usable])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return cls(coef=coef, constant_s=median)


@dataclass
class RunTimes:
    """The devices' run-time models, refit at most every MODEL_TTL_S (COLD_TTL_S)."""

    clock: Callable[[], float] = time.monotonic
    # device -> (when to refit, model)
    _models: dict[DeviceType, tuple[float, RunTimeModel]] = field(default_factory=dict)

    def model(self, session: Session, device: DeviceType) -> RunTimeModel:
        cached = self._models.get(device)
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        rows = session.execute(
            select(Job.runs, Job.duration_ns, Job.atoms, Job.start_timestamp, Job.end_timestamp)
            .where(Job.device_type == device, Job.status == JobStatus.DONE)
            .order_by(Job.end_timestamp.desc())
            .limit(SAMPLES)
        ).all()
        samples = [
            (r.runs, r.duration_ns, r.atoms, (r.end_timestamp - r.start_timestamp).total_seconds())
            for r in rows
            if r.start_timestamp is not None and r.end_timestamp is not None
        ]
        model = RunTimeModel.fit(samples)
        ttl_s = MODEL_TTL_S if len(samples) >= MIN_SAMPLES else COLD_TTL_S
        self._models[device] = (self.clock() + ttl_s, model)
        return model

    def typical(self, session: Session, device: DeviceType) -> float:
        """A typical job's run seconds on the device (the median), DEFAULT_RUN_S if unknown."""
        typical = self.model(session, device).constant_s
        return typical if typical is not None and typical > 0 else DEFAULT_RUN_S
