"""The one error root of atomfleet and its narrow subclasses.

Errors carry fields, not just text, so that the API maps them to HTTP in one place
(`api/errors.py`) and a user reads what was wrong and where.
"""

from __future__ import annotations


class AtomfleetError(Exception):
    """Root of every error atomfleet raises on purpose."""


class InvalidRequestError(AtomfleetError):
    """A user's request is wrong; `problems` lists `(field, reason)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))

    @classmethod
    def single(cls, field: str, reason: str) -> InvalidRequestError:
        return cls([(field, reason)])

    @property
    def messages(self) -> list[str]:
        return [f"{field}: {reason}" for field, reason in self.problems]


class NotFoundError(AtomfleetError):
    """The resource does not exist, or the caller may not see it."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident} not found")


class QuotaExceededError(AtomfleetError):
    """A project's submit quota would be exceeded; nothing was written (HTTP 429)."""

    def __init__(self, field: str, reason: str, retry_after_s: int | None = None) -> None:
        self.field = field
        self.retry_after_s = retry_after_s
        super().__init__(f"{field}: {reason}")


class GoneError(AtomfleetError):
    """The resource existed and was deleted on purpose (a result past its retention)."""


class ConflictError(AtomfleetError):
    """The action is not allowed in the resource's current state."""


class AuthenticationError(AtomfleetError):
    """Missing, unknown, expired or revoked credentials."""


class ServiceUnavailableError(AtomfleetError):
    """A backing service (Redis, the database) cannot be reached."""


class DriverError(AtomfleetError):
    """A device driver could not run a job; the message is shown to the user."""


class RateLimitedError(QuotaExceededError):
    """A caller made more calls than a rate limit allows (HTTP 429 with Retry-After)."""
