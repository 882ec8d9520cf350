"""The simulator's errors: each carries the HTTP status and envelope code it is answered with.

`http_errors.py` turns them into responses, in one place.
"""

from __future__ import annotations

from typing import Any

from core.errors import AtomfleetError
from qpu_simulator.protocol import CANNOT_CANCEL_CODE, JobStatus


class SimulatorError(AtomfleetError):
    """Root of the errors the simulated QPU answers with; `data` joins the envelope's data."""

    http_status = 500
    code = "500"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class InvalidSubmissionError(SimulatorError):
    """A submitted job the QPU cannot run; `field` names the part of the body at fault."""

    http_status = 400
    code = "400"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", {"field": field})
        self.field = field
        self.reason = reason


class UnauthorizedError(SimulatorError):
    http_status = 401
    code = "401"

    def __init__(self) -> None:
        super().__init__("missing or invalid bearer token (Authorization: Bearer <token>)")


class JobNotFoundError(SimulatorError):
    http_status = 404
    code = "404"

    def __init__(self, uid: int) -> None:
        super().__init__(f"job {uid} not found", {"uid": uid})


class CannotCancelError(SimulatorError):
    """The job already ended; the body mimics the real QPU's (warden reads `data.status`)."""

    http_status = 400
    code = CANNOT_CANCEL_CODE

    def __init__(self, uid: int, status: JobStatus) -> None:
        super().__init__(
            f"job {uid} is {status.value} and can no longer be canceled",
            {"status": status.value, "uid": uid},
        )


class QPUDownError(SimulatorError):
    """A submission while the QPU is DOWN; 503 is one of the codes warden's client retries."""

    http_status = 503
    code = "503"

    def __init__(self) -> None:
        super().__init__("the QPU is DOWN: submissions are refused until it is UP again")


class InjectedFaultError(SimulatorError):
    """A failure injected on purpose (`POST /control/faults`)."""

    http_status = 503
    code = "503"

    def __init__(self) -> None:
        super().__init__("service unavailable (fault injected by the QPU simulator)")


class EmulationError(AtomfleetError):
    """The emulator could not run a job; the job ends in ERROR with this message logged."""
