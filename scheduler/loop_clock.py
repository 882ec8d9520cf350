"""When each scheduler loop last turned: the scheduler's health and its last-loop metric.

A loop turns when its step completes. Each loop has its own longest normal gap (the
dispatcher sleeps up to `dispatch_idle_wait_s` when nothing wakes it); past that gap plus
a margin the loop is stuck (a hung database or Redis call), `/healthz` answers 503, and
the liveness probe restarts the scheduler. A loop that has not turned yet counts from the
clock's creation, so a first turn that hangs is caught too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from core.health import Health

MARGIN_S = 60.0


class LoopClock:
    def __init__(self, gaps_s: Mapping[str, float], margin_s: float = MARGIN_S) -> None:
        """`gaps_s`: each loop's longest normal time between two turns."""
        started = time.time()
        self._limits = {name: gap + margin_s for name, gap in gaps_s.items()}
        self._last = dict.fromkeys(gaps_s, started)
        self._lock = threading.Lock()

    def turned(self, name: str) -> None:
        with self._lock:
            self._last[name] = time.time()

    def oldest_turn(self) -> float:
        """Unix time of the least recent loop turn (the clock's start for a loop not yet turned)."""
        with self._lock:
            return min(self._last.values(), default=time.time())

    def health(self) -> Health:
        now = time.time()
        with self._lock:
            stuck = [
                f"{name} has not turned for {now - last:.0f} s"
                for name, last in sorted(self._last.items())
                if now - last > self._limits[name]
            ]
        if stuck:
            return Health(False, "; ".join(stuck))
        return Health(True, "every loop turns")
