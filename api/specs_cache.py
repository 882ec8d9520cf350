"""Device specs as the API serves them: computed when they change, answered from memory.

Building and serializing every device's Pulser specs costs ~90 ms of CPU, too much for an
endpoint anyone may call. The bodies are built once (at start-up) and again only when a
QPU's specs in Redis change (the scheduler's QPU watch refreshes them every minute): each
call compares at most once per `recheck_s` the QPUs' raw specs with those the bodies were
built from. Each body carries a strong ETag, so a client that sends `If-None-Match` gets a
304 with no body.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from starlette.requests import Request
from starlette.responses import Response

from api.envelope import success
from scheduler.specs import DeviceSpecs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Body:
    """A prepared JSON response body and its ETag."""

    content: bytes
    etag: str

    @classmethod
    def of(cls, response: Response) -> Body:
        content = bytes(response.body)
        return cls(content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"')

    def response(self, request: Request) -> Response:
        """200 with the body, or 304 when the request's If-None-Match names this ETag."""
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("if-none-match", ""), self.etag):
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type="application/json", headers=headers)


def _matches(header: str, etag: str) -> bool:
    """RFC 9110's weak comparison, as If-None-Match asks (`*` matches any)."""
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class _Bodies:
    fingerprint: tuple[bytes | None, ...]
    public: Body  # [{device_type, specs}]
    by_device: Body  # {device_type: specs}


class SpecsCache:
    def __init__(
        self,
        specs: DeviceSpecs,
        recheck_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.specs = specs
        self.recheck_s = recheck_s
        self.clock = clock
        # The QPUs whose specs some served device's specs come from (EMU_FRESNEL's: FRESNEL's).
        self._qpus = list(specs.settings.qpus)
        self._lock = threading.Lock()
        self._bodies: _Bodies | None = None
        self._checked_at = -float("inf")
        self.builds = 0  # how many times the bodies were built (tests and the benchmark)

    def public(self) -> Body:
        """`[{device_type, specs}]` of Public Device Specs."""
        return self._current().public

    def by_device(self) -> Body:
        """`{device_type: specs}` of Device Specs."""
        return self._current().by_device

    def _current(self) -> _Bodies:
        bodies = self._bodies
        if bodies is not None and self.clock() - self._checked_at < self.recheck_s:
            return bodies
        with self._lock:
            if self._bodies is not None and self.clock() - self._checked_at < self.recheck_s:
                return self._bodies
            fingerprint = self._fingerprint()
            if fingerprint is None and self._bodies is not None:
                bodies = self._bodies  # Redis does not answer: keep serving what we have
            elif self._bodies is None or self._bodies.fingerprint != fingerprint:
                bodies = self._build(fingerprint or ())
            else:
                bodies = self._bodies
            self._bodies, self._checked_at = bodies, self.clock()
            return bodies

    def _fingerprint(self) -> tuple[bytes | None, ...] | None:
        """The raw specs of the QPUs the served specs depend on; None when Redis fails."""
        if not self._qpus:
            return ()
        try:
            with self.specs.client.pipeline(transaction=False) as pipe:
                for device in self._qpus:
                    pipe.hget(self.specs.keys.device_state(device), "specs")
                raw = pipe.execute()
        except redis.RedisError as exc:
            log.warning("cannot check the QPUs' specs: %s", exc)
            return None
        return tuple(value if isinstance(value, bytes) else None for value in raw)

    def _build(self, fingerprint: tuple[bytes | None, ...]) -> _Bodies:
        reprs = self.specs.abstract_reprs()
        self.builds += 1
        return _Bodies(
            fingerprint=fingerprint,
            public=Body.of(success([{"device_type": d, "specs": s} for d, s in reprs.items()])),
            by_device=Body.of(success(reprs)),
        )

    def warm(self) -> None:
        """Build the bodies now (at start-up), so that the first caller does not pay."""
        try:
            self._current()
        except Exception as exc:  # noqa: BLE001  # a QPU's bad specs must not stop the API
            log.warning("device specs not prepared at start-up: %s", exc)
