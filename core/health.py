"""A process's answer to "are you healthy?", as its `/healthz` gives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


HealthCheck = Callable[[], Health]
