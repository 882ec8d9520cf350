"""Delivers the webhook outbox: POSTs signed by the Standard Webhooks scheme, with retries.

- Only a 2xx counts; redirects are not followed; a 410 stops the retries (GONE).
- Retries follow `webhook_retry_s` (about 24 h in all) with +-20% jitter; the
  `webhook-id` is the same on every attempt, `webhook-timestamp` the attempt's.
- The URL's host is resolved once and must be public (scheduler.webhooks.addresses),
  unless `webhook_allow_hosts` names it; the connection goes to the address checked.
- A delivery is claimed before the attempt (its next attempt pushed back), so a crash
  mid-attempt retries it later rather than losing it.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeliveryStatus
from scheduler.models import Project, WebhookDelivery, utcnow
from scheduler.webhooks.addresses import RefusedAddress, Unresolved, resolve
from scheduler.webhooks.signing import new_secret, signatures

log = logging.getLogger(__name__)

CLAIM_S = 120.0  # an attempt in progress is not taken again before this
CLAIM_BATCH = 20  # deliveries claimed, and attempted at once, per turn
ROTATION_GRACE = timedelta(hours=24)  # the previous secret signs too, this long


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None = None

    def kind(self) -> str:
        """delivered, gone, rejected, refused or unreachable (the metric's `outcome`)."""
        code = self.status_code
        if code is not None:
            return "delivered" if 200 <= code < 300 else "gone" if code == 410 else "rejected"
        return "refused" if self.error and self.error.startswith("refused") else "unreachable"


class WebhookSender:
    interval_s = 1.0

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_attempt = on_attempt  # told each attempt's outcome (the metrics)
        self._pool = ThreadPoolExecutor(CLAIM_BATCH, thread_name_prefix="webhook")

    def deliver_once(self) -> int:
        """Attempt every due delivery claimed, at once (a slow receiver delays no other);
        returns how many were attempted."""
        due = self._claim()
        list(self._pool.map(self._attempt, due))
        return len(due)

    def _claim(self) -> list[str]:
        now = utcnow()
        with self.sessions.begin() as session:
            rows = list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(
                        WebhookDelivery.status == DeliveryStatus.PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for row in rows:
                row.next_attempt_at = now + timedelta(seconds=CLAIM_S)
            return [row.id for row in rows]

    def _attempt(self, delivery_id: str) -> None:
        with self.sessions() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                return
            project = session.get(Project, delivery.project_id)
            secrets = _secrets_of(project) if project is not None else []
            url, body = delivery.url, delivery.payload.encode()
        if not secrets:  # the project was never given one: make it, then sign
            secrets = [self._ensure_secret(delivery.project_id)]
        outcome = self._post(url, delivery_id, body, secrets)
        self._record(delivery_id, outcome)
        if self.on_attempt is not None:
            self.on_attempt(outcome.kind())

    def _ensure_secret(self, project_id: str) -> str:
        with self.sessions.begin() as session:
            project = session.scalars(
                select(Project).where(Project.id == project_id).with_for_update()
            ).one()
            project.webhook_secret = project.webhook_secret or new_secret()
            return project.webhook_secret

    def _post(self, url: str, webhook_id: str, body: bytes, secrets: list[str]) -> Outcome:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return Outcome(None, "not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = resolve(parts.hostname, port, self.settings.webhook_allow_hosts)
        except RefusedAddress as exc:
            return Outcome(None, f"refused: {exc}")
        except Unresolved as exc:
            return Outcome(None, str(exc))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "atomfleet-webhooks",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures(secrets, webhook_id, timestamp, body),
        }
        connection = _pinned(parts.scheme, parts.hostname, address, port, self.settings)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(64 * 1024)
            return Outcome(response.status)
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def _record(self, delivery_id: str, outcome: Outcome) -> None:
        now = utcnow()
        with self.sessions.begin() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return
            delivery.attempts += 1
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
            code = outcome.status_code
            if code is not None and 200 <= code < 300:
                delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, now
                delivery.next_attempt_at = None
            elif code == 410:
                delivery.status, delivery.next_attempt_at = DeliveryStatus.GONE, None
            elif outcome.error and outcome.error.startswith("refused"):
                delivery.status, delivery.next_attempt_at = DeliveryStatus.REFUSED, None
            elif delivery.attempts > len(self.settings.webhook_retry_s):
                delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            else:
                pause = self.settings.webhook_retry_s[delivery.attempts - 1]
                delivery.next_attempt_at = now + timedelta(seconds=pause * random.uniform(0.8, 1.2))
            if delivery.status != DeliveryStatus.PENDING:
                log.info("webhook %s of batch %s: %s", delivery.id, delivery.batch_id,
                         delivery.status.value, extra={"batch_id": delivery.batch_id})  # fmt: skip


def _secrets_of(project: Project) -> list[str]:
    found = [project.webhook_secret] if project.webhook_secret else []
    rotated = project.webhook_secret_rotated_at
    if project.previous_webhook_secret and rotated and utcnow() - rotated < ROTATION_GRACE:
        found.append(project.previous_webhook_secret)
    return found


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address checked, whatever the host name resolves to now."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        # The certificate is checked against the host name (SNI), not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _pinned(
    scheme: str, host: str, address: str, port: int, settings: Settings
) -> http.client.HTTPConnection:
    kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    return kind(host, address, port, settings.webhook_timeout_s)
