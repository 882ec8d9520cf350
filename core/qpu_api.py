"""The QPU HTTP API (`{base}/api/v1`, see notes/qpu.md) and a client for it.

Every answer is an envelope `{"code", "message", "data", "status"}`. The scheduler reads
a QPU's operational status and specs; a QPU worker submits, polls and cancels jobs.

Retries follow Pasqal's own client (warden), 429, 5xx and connection errors, `retries`
attempts, with a backoff: `retry_s` doubled after each failure up to `MAX_BACKOFF` times it,
or the QPU's `Retry-After` when that is longer (at most `MAX_RETRY_AFTER_S`), so a QPU that
is struggling is not hammered. A submission is retried only when the QPU certainly did not
take it (the connection was refused, or it answered 429 or 503): after an ambiguous
failure, resending could run the same job twice on the hardware.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from core.errors import AtomfleetError

API = "/api/v1"
_RETRIED = frozenset({429, 500, 502, 503, 504})
_NOT_TAKEN = frozenset({429, 503})
MAX_BACKOFF = 8  # the longest pause, in retry_s
MAX_RETRY_AFTER_S = 30.0  # the longest Retry-After honoured
CANNOT_CANCEL = "3003"  # in the code of the 400 a cancel of an ended job gets


class QpuJobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    CANCELED = "CANCELED"
    DONE = "DONE"

    @property
    def is_terminal(self) -> bool:
        return self in (QpuJobStatus.ERROR, QpuJobStatus.CANCELED, QpuJobStatus.DONE)


class QpuError(AtomfleetError):
    """The QPU refused a request (a 4xx), or kept failing; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class QpuUnreachable(QpuError):
    """No answer (or only 5xx) after every retry."""


@dataclass(frozen=True)
class QpuJob:
    uid: int
    status: QpuJobStatus
    result: str | None

    @classmethod
    def of(cls, data: Any) -> QpuJob:
        return cls(int(data["uid"]), QpuJobStatus(data["status"]), data.get("result"))

    def counter(self) -> dict[str, int]:
        """The bitstring counts of a DONE job (the QPU sends `{"counter": {...}}` as text)."""
        payload = json.loads(self.result or "{}")
        counts = payload.get("counter", payload) if isinstance(payload, dict) else {}
        return {str(bits): int(n) for bits, n in counts.items()}


class QpuClient:
    def __init__(
        self,
        base_url: str,
        token: str = "",
        timeout_s: float = 10.0,
        retries: int = 10,
        retry_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/") + API, headers=headers,
                                 timeout=timeout_s)  # fmt: skip
        self.retries = retries
        self.retry_s = retry_s
        self.sleep = sleep

    def close(self) -> None:
        self.http.close()

    def operational(self) -> bool:
        """True when the QPU says UP."""
        return bool(self._call("GET", "/system/operational")["operational_status"] == "UP")

    def specs(self) -> dict[str, Any]:
        """The QPU's Pulser device, as an abstract-repr dict."""
        specs = self._call("GET", "/system")["specs"]
        return json.loads(specs) if isinstance(specs, str) else dict(specs)

    def submit(self, nb_run: int, sequence: str, context: dict[str, str]) -> QpuJob:
        body = {"nb_run": nb_run, "pulser_sequence": sequence, "context": context}
        return QpuJob.of(self._call("POST", "/jobs", json=body, idempotent=False))

    def job(self, uid: int) -> QpuJob:
        return QpuJob.of(self._call("GET", f"/jobs/{uid}"))

    def cancel(self, uid: int) -> QpuJob:
        """Cancel a job; one that already ended is returned as it is."""
        try:
            return QpuJob.of(self._call("PUT", f"/jobs/{uid}/cancel"))
        except QpuError as exc:
            if exc.status == 400 and CANNOT_CANCEL in exc.code:
                return self.job(uid)
            raise

    def pause_s(self, attempt: int, retry_after: str | None = None) -> float:
        """The pause before retry number `attempt` (1, 2, ...)."""
        pause = self.retry_s * min(2.0 ** (attempt - 1), MAX_BACKOFF)
        try:
            asked = float(retry_after) if retry_after else 0.0
        except ValueError:  # an HTTP date: not worth parsing here
            asked = 0.0
        return max(pause, min(asked, MAX_RETRY_AFTER_S))

    def _call(self, method: str, path: str, idempotent: bool = True, **kwargs: Any) -> Any:
        last, retry_after = "", None
        for attempt in range(self.retries):
            if attempt:
                self.sleep(self.pause_s(attempt, retry_after))
                retry_after = None
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:  # never reached the QPU: safe to resend
                last = f"cannot connect: {exc}"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if idempotent:
                    continue
                raise QpuUnreachable(f"{method} {path}: {last}") from exc
            if response.status_code < 400:
                return _envelope(response)["data"]
            if response.status_code in (_RETRIED if idempotent else _NOT_TAKEN):
                last = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
                continue
            envelope = _envelope(response)
            raise QpuError(
                f"{method} {path}: HTTP {response.status_code}: {envelope.get('message', '')}",
                response.status_code,
                str(envelope.get("code", "")),
            )
        raise QpuUnreachable(f"{method} {path}: {last} after {self.retries} attempts")


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or ("data" not in body and response.status_code < 400):
        raise QpuError(f"not a QPU API answer (HTTP {response.status_code})", response.status_code)
    return body
