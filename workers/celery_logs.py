"""Celery's own logs in the process's format (`core.logs`), JSON included.

Celery configures logging itself unless a receiver of its `setup_logging` signal does it:
this one installs atomfleet's root handler, so that Celery's loggers (`celery.worker`,
`celery.app.trace`, the redirected stdout) propagate to it like every other. The prefork
children inherit it through the fork. In JSON, the worker's start banner (printed, not
logged) is left out with `--quiet`, so that every line of stderr and stdout is an object.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging

from core.logs import LogFormat, configure_logging


def install(log_format: LogFormat) -> None:
    """Have Celery log through `core.logs` in `log_format` (call before `worker_main`)."""

    def _configure(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(log_format, loglevel or logging.INFO)

    setup_logging.connect(_configure, weak=False)


def worker_arguments(log_format: LogFormat) -> list[str]:
    """Extra `celery worker` arguments for the format."""
    return ["--quiet"] if log_format == "json" else []
