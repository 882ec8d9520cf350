"""Signed, expiring results links: the download carries no Authorization header."""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, job_id: str, expires: int) -> str:
    message = f"{job_id}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str, job_id: str, expires: int, signature: str, now: float | None = None
) -> bool:
    if (now if now is not None else time.time()) > expires or not signature.isascii():
        return False
    return hmac.compare_digest(sign(secret, job_id, expires), signature)
