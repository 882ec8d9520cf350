"""NOOP: a device that returns a tiny valid result at once, to measure the fleet itself.

It reads only the atom count from the sequence's JSON (no Pulser), and answers every shot
with the all-zero bitstring. `configuration: {"noop_sleep_s": s}` makes each job take `s`
seconds first (tests use it to catch a job while it runs); `{"noop_exit": "SIGKILL"}` (a
signal name) or `{"noop_exit": 3}` (an exit code) makes the worker process running it die
that way (tests of a poison job). Enabled only when listed in `ATOMFLEET_DEVICES`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time

from core.errors import DriverError
from core.messages import JobResult, JobSpec
from device_drivers.base import DeviceDriver, JobCanceled, JobContext


@functools.lru_cache(maxsize=64)
def _atoms(sequence: str) -> int:
    try:
        register = json.loads(sequence).get("register", [])
    except (ValueError, AttributeError) as exc:
        raise DriverError(f"not a Pulser sequence: {exc}") from exc
    return len(register) if isinstance(register, list) else 0


def _die_if_asked(how: object) -> None:
    """End this process as `how` says: a signal name, or an exit code."""
    if isinstance(how, str) and how.startswith("SIG") and hasattr(signal, how):
        os.kill(os.getpid(), getattr(signal, how))
        time.sleep(5)  # a signal that does not end the process at once
    elif isinstance(how, int) and not isinstance(how, bool):
        os._exit(how)


class Driver(DeviceDriver):
    def run(self, spec: JobSpec, job: JobContext) -> JobResult:
        sleep_s = (spec.configuration or {}).get("noop_sleep_s", 0)
        if isinstance(sleep_s, int | float) and sleep_s > 0:
            deadline = time.monotonic() + min(float(sleep_s), 3600.0)
            while time.monotonic() < deadline:  # like an emulator, stoppable between steps
                if job.canceled():
                    raise JobCanceled("canceled")
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        _die_if_asked((spec.configuration or {}).get("noop_exit"))
        return JobResult(counter={"0" * _atoms(spec.sequence): spec.runs or 1})
