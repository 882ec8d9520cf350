"""Live progress of emu-mps and emu-sv, read from their per-step log line.

Both log `step = k/N, ...` on the "emulators" logger after every time step; there is
no callback API. The handler must be attached after the backend is built, because
building a config resets that logger's handlers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from device_drivers.base import ProgressCallback

_STEP = re.compile(r"step = (\d+)/(\d+)")
LOGGER = "emulators"


class StepProgressHandler(logging.Handler):
    def __init__(self, progress: ProgressCallback) -> None:
        super().__init__(level=logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        match = _STEP.search(record.getMessage())
        if match:
            done, total = int(match[1]), int(match[2])
            if total:
                self.progress(min(100, done * 100 // total))


@contextmanager
def step_progress(progress: ProgressCallback) -> Iterator[None]:
    handler = StepProgressHandler(progress)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
