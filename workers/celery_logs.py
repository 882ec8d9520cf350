"""Celery's own logs in the process's format (`core.logs`), JSON included.

Celery configures logging itself unless a receiver of its `setup_logging` signal does it:
this one installs atomfleet's root handler, so that Celery's loggers (`celery.worker`,
`celery.app.trace`, the redirected stdout) propagate to it like every other. The prefork
children inherit it through the fork. In JSON, the worker's start banner (printed, not
logged) is left out with `--quiet`, so that every line of stderr and stdout is an object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import celery.apps.worker as celery_worker_app
from celery.signals import setup_logging

from core.logs import LogFormat, configure_logging


def install(log_format: LogFormat) -> None:
    """Have Celery log through `core.logs` in `log_format` (call before `worker_main`)."""

    def _configure(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(log_format, loglevel or logging.INFO)

    setup_logging.connect(_configure, weak=False)
    if log_format == "json":
        # The messages Celery's signal handlers print ("worker: Warm shutdown") become JSON
        # lines too, still written with a bare os.write (no logging lock in a handler).
        celery_worker_app.safe_say = json_say


def json_say(msg: str, f: TextIO | None = None) -> None:
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "WARNING",
        "logger": "celery.apps.worker",
        "message": msg,
        "process": os.getpid(),
    }
    stream = f or sys.__stderr__
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(stream.fileno(), (json.dumps(line) + "\n").encode())  # type: ignore[union-attr]


def worker_arguments(log_format: LogFormat) -> list[str]:
    """Celery's global options for the format (they go before `worker`)."""
    return ["--quiet"] if log_format == "json" else []
