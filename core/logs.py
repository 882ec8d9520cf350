"""Every process's logs: text for people, or one JSON object per line (`ATOMFLEET_LOG_FORMAT`).

`configure_logging` installs one handler on the root logger; every library's logger
(uvicorn, Celery, SQLAlchemy) propagates to it, so all of a process's lines share the
format. In JSON, each line is an object with `ts` (RFC 3339, UTC), `level`, `logger`,
`message`, `process`, and, where known, `batch_id`, `job_id` and `device_type`: from the
record's `extra`, else from the context the code runs in (`log_context`, contextvars:
correct across threads and asyncio tasks), plus `exc` with the traceback of an exception.
The API's access log adds `method`, `route`, `status` and `duration_ms`
(`api.access_log`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMATS = ("text", "json")
ENV = "ATOMFLEET_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# What a line says about the work it is about, when known.
CONTEXT_FIELDS = ("batch_id", "job_id", "device_type")
# Further fields a record may carry in `extra` that a JSON line keeps (the access log's).
EXTRA_FIELDS = ("method", "route", "status", "duration_ms")

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "atomfleet_log_context", default=None
)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Within the block, every line of this thread or task carries `fields` (None: left out)."""
    known = {k: str(v) for k, v in fields.items() if v is not None}
    token = _context.set({**(_context.get() or {}), **known})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, str]:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value is not None:
                line[name] = str(value)
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """The plain format, with the context's ids appended where known."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context.get() or {}
        found = [
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None) or context.get(name)) is not None
        ]
        return f"{text} [{' '.join(found)}]" if found else text


def log_format_from_env(default: LogFormat = "text") -> LogFormat:
    value = os.environ.get(ENV, default).strip().lower()
    return value if value in FORMATS else default  # type: ignore[return-value]


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT)


def configure_logging(log_format: LogFormat | None = None, level: int | str = logging.INFO) -> None:
    """One stderr handler on the root logger, in `log_format` (default: the environment's),
    replacing any other; other loggers' own handlers are removed so that they propagate."""
    chosen = log_format or log_format_from_env()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(chosen))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.captureWarnings(True)  # warnings too are lines of this format (py.warnings)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        named = logging.getLogger(name)
        for old in list(named.handlers):
            named.removeHandler(old)
        named.propagate = True
