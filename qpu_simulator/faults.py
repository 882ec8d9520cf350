"""Failures injected on purpose, so that a QPU client's retries and timeouts can be tested."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Response

from qpu_simulator.errors import InjectedFaultError
from qpu_simulator.http_errors import error_response
from qpu_simulator.protocol import API_PREFIX


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often. All zero: a healthy QPU."""

    error_rate: float = 0.0  # share of /api/v1 requests answered 503
    latency_s: float = 0.0  # every /api/v1 answer waits this long first
    job_error_rate: float = 0.0  # share of executed jobs that end in ERROR

    def fails(self, rng: random.Random) -> bool:
        return self.error_rate > 0 and rng.random() < self.error_rate

    def job_fails(self, rng: random.Random) -> bool:
        return self.job_error_rate > 0 and rng.random() < self.job_error_rate


Next = Callable[[Request], Awaitable[Response]]


def fault_middleware(
    current: Callable[[], Faults], rng: random.Random
) -> Callable[[Request, Next], Awaitable[Response]]:
    """HTTP middleware: delay, then maybe fail, every /api/v1 request (before auth, as a
    gateway in front of the QPU would)."""

    async def middleware(request: Request, call_next: Next) -> Response:
        if not request.url.path.startswith(API_PREFIX):
            return await call_next(request)
        faults = current()
        if faults.latency_s > 0:
            await asyncio.sleep(faults.latency_s)
        if faults.fails(rng):
            return error_response(InjectedFaultError())
        return await call_next(request)

    return middleware
