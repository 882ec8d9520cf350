"""Standard Webhooks signatures (github.com/standard-webhooks): per-project secrets
`whsec_<base64>`, and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def signatures(secrets_in_use: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret (space-separated), so a
    receiver still holding the previous secret verifies during a rotation."""
    return " ".join(sign(s, webhook_id, timestamp, body) for s in secrets_in_use)


def verify(secret: str, webhook_id: str, timestamp: int, body: bytes, header: str) -> bool:
    expected = sign(secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in header.split())
