"""The QPU HTTP API's names and codes, as Pasqal's QPU clients (warden, Pulser-myQLM) read them.

This is the QPU's own wire protocol, versioned apart from atomfleet's public API, so its
statuses are declared here rather than borrowed from `core.enums`.
"""

from __future__ import annotations

from enum import StrEnum

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/control"


class JobStatus(StrEnum):
    """A QPU job's status; a terminal one is never left."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    CANCELED = "CANCELED"
    DONE = "DONE"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.ERROR, JobStatus.CANCELED, JobStatus.DONE)


class OperationalStatus(StrEnum):
    UP = "UP"
    DOWN = "DOWN"


class EnvelopeStatus(StrEnum):
    """JSend's `status`: `fail` for the caller's mistake, `error` for the server's."""

    SUCCESS = "success"
    FAIL = "fail"
    ERROR = "error"


# A success envelope's `code` is the integer 200; failures carry a string code, which
# warden's client searches for "3003" when a cancel is refused.
SUCCESS_CODE = 200
SUCCESS_MESSAGE = "OK."
# What the real QPU answers (HTTP 400) to a cancel of a job that already ended; warden's
# mock QPU mimics it with this exact code, and its client tests `"3003" in code`.
CANNOT_CANCEL_CODE = "OSPG3003"
